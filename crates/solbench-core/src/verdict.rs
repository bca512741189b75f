//! Verdicts: measured ÷ peak against the expected efficiency of a healthy device, with
//! the reason in words.

use crate::backend::DeviceInfo;
use crate::case::{Case, MemoryOp};
use crate::spec::{Expectation, Peak, Spec, SpecDb, SpecValue};
use crate::work::{Headline, Work};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Pass,
    Warn,
    Fail,
    /// Measured and verified, but nothing to judge it against.
    NoSpec,
    /// Measured while the device throttled: not judged.
    Inconclusive,
    /// The output was wrong: no number is reported.
    Wrong,
    /// The case cannot run on this device.
    Skipped,
    /// The case failed with an error.
    Error,
}

impl VerdictKind {
    pub fn label(self) -> &'static str {
        match self {
            VerdictKind::Pass => "PASS",
            VerdictKind::Warn => "WARN",
            VerdictKind::Fail => "FAIL",
            VerdictKind::NoSpec => "NO SPEC",
            VerdictKind::Inconclusive => "INCONCLUSIVE",
            VerdictKind::Wrong => "WRONG",
            VerdictKind::Skipped => "SKIPPED",
            VerdictKind::Error => "ERROR",
        }
    }

    /// Whether this outcome makes the run exit 1.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            VerdictKind::Fail | VerdictKind::Wrong | VerdictKind::Error
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// The metric key judged (`memory.dram`, `gemm.bf16`, `attention.decode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// measured / peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<Peak>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expectation>,
    /// Which product's spec sheet, by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    pub reason: String,
}

impl Verdict {
    pub fn simple(kind: VerdictKind, reason: impl Into<String>) -> Verdict {
        Verdict {
            kind,
            metric: None,
            efficiency: None,
            peak: None,
            expected: None,
            spec: None,
            reason: reason.into(),
        }
    }
}

/// Default expected efficiencies, used when neither the product's spec nor the user's
/// acceptance file says otherwise. Grounded in ../docs/methodology.md's references.
pub fn default_expectation(metric: &str) -> Option<Expectation> {
    let (pass, warn, why) = match metric {
        "memory.dram" => (0.80, 0.70, "STREAM-style kernels reach ~90% of the HBM spec on healthy GPUs (A100 BabelStream triad 90%; torchao assumes 92% on H100)"),
        "memory.ce_copy" => (0.80, 0.70, "a copy-engine device-local copy moves each byte twice through HBM; nvbandwidth-style copies reach ~90% of half the HBM spec (an H100 SXM near 1.5 TB/s counted once, 3.0 TB/s read + write)"),
        "memory.h2d" | "memory.d2h" => (0.70, 0.55, "pinned copies over a healthy PCIe x16 link reach roughly 75-88% of the per-direction line rate (estimates: Gen4 ~24-26 of 32 GB/s, Gen5 ~50-57 of 64 GB/s); a link trained at lower width or generation lands at half or less"),
        "memory.bidir" => (0.65, 0.50, "both directions at once share the root complex and completion credits; ~70-85% of the bidirectional line rate is typical"),
        "memory.peer" => (0.75, 0.60, "NVLink 4 peer copies reach ~380 of 450 GB/s per direction (84%, p2pBandwidthLatencyTest on HGX H100)"),
        "collective.all_reduce" => (0.70, 0.55, "8x H100 all_reduce reaches ~370 GB/s busbw with rings (82% of NVLink's 450 per direction) and ~480 with NVLS; 8x MI300X ~310-330 (nccl-tests#212, AMD's MI300X RCCL blog)"),
        "collective.all_gather" | "collective.reduce_scatter" | "collective.alltoall" | "collective.broadcast" | "collective.reduce" | "collective.sendrecv" => (0.65, 0.50, "non-all_reduce collectives run at ring speed: ~370 of 450 GB/s per direction on 8x H100 (~80%, nccl-tests#212); a little lower is healthy"),
        "gemm.bf16" | "gemm.fp16" => (0.65, 0.55, "mamf-finder: NVIDIA Ampere/Hopper/Blackwell reach 77-87% of dense BF16 peak at the best shape"),
        "gemm.fp8" => (0.60, 0.50, "mamf-finder: NVIDIA reaches 71-78% of dense FP8 peak at the best shape"),
        "gemm.tf32" => (0.60, 0.50, "TF32 tensor-core GEMM runs at a similar fraction of peak as BF16, slightly lower"),
        "gemm.fp32" | "gemm.fp64" => (0.70, 0.60, "large FP32/FP64 GEMMs run near vector peak on healthy GPUs"),
        "attention.prefill" => (0.25, 0.15, "design estimate, not yet measured: our mma.sync FlashAttention-2 kernel feeds the tensor cores through ldmatrix at ~14 FLOP per shared-memory byte, which caps it near 44% of Hopper's dense peak (FA2 measures 35-37%, FA3 ~75% with wgmma); spec sheets carry per-generation anchors (A100 higher, Blackwell lower) — re-anchor after the first GPU run"),
        "attention.decode" => (0.70, 0.55, "decode is bound by reading the KV cache: a good split-KV kernel runs near the HBM roofline"),
        "attention.decode_mla" => (0.20, 0.12, "estimate, not yet measured: our mma.sync MLA decode kernel is limited by shared-memory bandwidth at 128 heads (design estimate 25-35% of the roofline; FlashMLA's wgmma kernel gets far closer) — re-anchor after the first GPU run"),
        _ => return None,
    };
    Some(Expectation {
        pass,
        warn,
        why: Some(why.into()),
    })
}

/// User overrides of expected efficiencies (the `--acceptance` TOML file).
///
/// ```toml
/// [expected]
/// "gemm.bf16" = { pass = 0.75, warn = 0.65 }
/// [product."nvidia-h100-sxm".expected]
/// "memory.dram" = { pass = 0.88, warn = 0.80 }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    #[serde(default)]
    pub expected: BTreeMap<String, Expectation>,
    #[serde(default)]
    pub product: BTreeMap<String, ProductAcceptance>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductAcceptance {
    #[serde(default)]
    pub expected: BTreeMap<String, Expectation>,
}

impl Acceptance {
    pub fn parse(file: &str, text: &str, specs: &SpecDb) -> Result<Acceptance, String> {
        let acc: Acceptance = toml::from_str(text)
            .map_err(|e| format!("acceptance file {file}: {}", e.to_string().trim_end()))?;
        for (k, e) in &acc.expected {
            check_metric_name(k)
                .map_err(|why| format!("acceptance file {file}: [expected] \"{k}\": {why}"))?;
            e.validate(&format!("acceptance file {file}: [expected] \"{k}\""))?;
        }
        for (id, p) in &acc.product {
            if !specs.specs.iter().any(|s| &s.id == id) {
                return Err(format!("acceptance file {file}: [product.\"{id}\"] names no known product (see `solbench specs`)"));
            }
            for (k, e) in &p.expected {
                check_metric_name(k).map_err(|why| {
                    format!("acceptance file {file}: [product.\"{id}\".expected] \"{k}\": {why}")
                })?;
                e.validate(&format!(
                    "acceptance file {file}: [product.\"{id}\".expected] \"{k}\""
                ))?;
            }
        }
        Ok(acc)
    }
}

/// Checks a metric key is one solbench judges, so a typo in an acceptance file is an
/// error instead of a silently ignored threshold.
pub fn check_metric_name(key: &str) -> Result<(), String> {
    let (family, metric) = key.split_once('.').unwrap_or((key, ""));
    let ok = match family {
        "memory" => {
            metric == "dram"
                || (metric.starts_with('l') && metric.len() <= 3)
                || MemoryOp::parse(metric).is_ok_and(|op| op.gpu_only())
        }
        "gemm" => ["fp8", "bf16", "fp16", "tf32", "fp32", "fp64"].contains(&metric),
        "attention" => ["prefill", "decode", "decode_mla"].contains(&metric),
        "collective" => crate::case::CollectiveOp::parse(metric).is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err("not a metric solbench judges (memory.dram, memory.l2, memory.{ce_copy,h2d,d2h,bidir,peer,smem,smem_sm}, gemm.{fp8,bf16,fp16,tf32,fp32,fp64}, attention.{prefill,decode,decode_mla}, collective.<op>)".into())
    }
}

/// The peak of a GPU-only memory operation, from the spec sheet's interconnect and memory
/// figures, or why there is none.
fn transfer_peak(spec: &Spec, op: MemoryOp) -> Result<Peak, String> {
    let from = |v: &Option<SpecValue>, scale: f64, what: String| -> Option<Peak> {
        v.as_ref().map(|v| Peak {
            value: v.value * scale,
            unit: "GB/s".into(),
            what,
            source: v.source.clone(),
        })
    };
    let i = &spec.interconnect;
    let pcie = |scale: f64, what: &str| {
        from(&i.pcie_gb_s, scale, format!("PCIe {what} of {}", spec.name))
            .ok_or_else(|| format!("{} lists no PCIe bandwidth", spec.name))
    };
    match op {
        MemoryOp::Smem | MemoryOp::SmemSm => Err(format!(
            "spec sheets publish no shared-memory bandwidth for {}; the device's theoretical figure is recorded with the device",
            spec.name
        )),
        MemoryOp::CeCopy => from(
            &spec.memory.bandwidth_gb_s,
            0.5,
            format!(
                "half the memory bandwidth of {} (a copy reads and writes each byte it counts once)",
                spec.name
            ),
        )
        .ok_or_else(|| format!("{} lists no memory bandwidth", spec.name)),
        MemoryOp::H2d | MemoryOp::D2h => pcie(0.5, "bandwidth per direction"),
        MemoryOp::Bidir => pcie(1.0, "bandwidth, both directions together"),
        MemoryOp::Peer => from(
            &i.scale_up_per_direction_gb_s,
            1.0,
            format!(
                "{} bandwidth per direction of {}",
                i.scale_up.as_deref().unwrap_or("scale-up"),
                spec.name
            ),
        )
        .map(Ok)
        .unwrap_or_else(|| pcie(0.5, "bandwidth per direction (no scale-up link listed)")),
        _ => Err(format!("{} is not a transfer operation", op.name())),
    }
}

/// Messages below this size are latency-bound, so their bus bandwidth is not judged
/// against a link's bandwidth (nccl-tests users read the large-message plateau).
pub const COLLECTIVE_JUDGED_FROM: u64 = 256 << 20;

/// The peak a collective's bus bandwidth is compared with: the GPU's scale-up link per
/// direction (NVLink, xGMI), else PCIe per direction. busbw is defined (nccl-tests
/// PERFORMANCE.md) to be comparable with that link bandwidth whatever the rank count.
fn collective_peak(spec: &Spec, c: &crate::case::CollectiveCase) -> Result<Peak, String> {
    if c.bytes < COLLECTIVE_JUDGED_FROM {
        return Err(format!(
            "a {} message is latency-bound; bus bandwidth is judged from {} up",
            crate::size::format_size(c.bytes),
            crate::size::format_size(COLLECTIVE_JUDGED_FROM)
        ));
    }
    let i = &spec.interconnect;
    if let Some(v) = &i.scale_up_per_direction_gb_s {
        return Ok(Peak {
            value: v.value,
            unit: "GB/s".into(),
            what: format!(
                "{} bandwidth per direction of {}",
                i.scale_up.as_deref().unwrap_or("scale-up link"),
                spec.name
            ),
            source: v.source.clone(),
        });
    }
    i.pcie_gb_s
        .as_ref()
        .map(|v| Peak {
            value: v.value / 2.0,
            unit: "GB/s".into(),
            what: format!(
                "PCIe bandwidth per direction of {} (no scale-up link listed)",
                spec.name
            ),
            source: v.source.clone(),
        })
        .ok_or_else(|| format!("{} lists no interconnect bandwidth", spec.name))
}

/// Judges measurements of one device.
pub struct Judge<'a> {
    pub device: &'a DeviceInfo,
    pub spec: Option<&'a Spec>,
    /// Why no spec applies (no match, or an ambiguous match).
    pub no_spec_reason: String,
    pub acceptance: &'a Acceptance,
}

impl<'a> Judge<'a> {
    pub fn new(device: &'a DeviceInfo, specs: &'a SpecDb, acceptance: &'a Acceptance) -> Judge<'a> {
        let (spec, no_spec_reason) = match specs.match_device(device) {
            Ok(Some(s)) => (Some(s), String::new()),
            Ok(None) => (
                None,
                format!(
                    "no spec sheet matches '{}', so it is not judged",
                    device.name
                ),
            ),
            Err(e) => (None, e),
        };
        Judge {
            device,
            spec,
            no_spec_reason,
            acceptance,
        }
    }

    /// The metric key and the level label of a case on this device.
    pub fn metric_key(&self, case: &Case) -> String {
        match case {
            Case::Memory(m) if m.op.gpu_only() => format!("memory.{}", m.op.name()),
            Case::Memory(m) => {
                let level = self
                    .device
                    .level_for(m.working_set)
                    .map(|l| l.name.as_str())
                    .unwrap_or("memory");
                if self.device.main_memory().map(|l| l.name.as_str()) == Some(level) {
                    "memory.dram".into()
                } else {
                    format!("memory.{}", level.to_ascii_lowercase())
                }
            }
            Case::Gemm(g) => format!("gemm.{}", g.dtype.peak_key()),
            // MLA decode has its own expectation: 128 query heads share one latent row, so an
            // mma.sync kernel is bound by shared-memory traffic far below the HBM roofline.
            Case::Attention(a)
                if a.phase == crate::case::AttentionPhase::Decode
                    && a.variant == crate::case::AttentionVariant::Mla =>
            {
                "attention.decode_mla".into()
            }
            Case::Attention(a) => format!("attention.{}", a.phase.name()),
            Case::Collective(c) => format!("collective.{}", c.op.name()),
        }
    }

    fn expectation(&self, metric: &str) -> Option<Expectation> {
        if let Some(spec) = self.spec {
            if let Some(e) = self
                .acceptance
                .product
                .get(&spec.id)
                .and_then(|p| p.expected.get(metric))
            {
                return Some(e.clone());
            }
        }
        if let Some(e) = self.acceptance.expected.get(metric) {
            return Some(e.clone());
        }
        if let Some(e) = self.spec.and_then(|s| s.expected.get(metric)) {
            return Some(e.clone());
        }
        default_expectation(metric)
    }

    /// The peak a case's headline value is compared with, or why there is none.
    pub fn peak(&self, case: &Case, work: &Work, headline: Headline) -> Result<Peak, String> {
        let spec = self.spec.ok_or_else(|| self.no_spec_reason.clone())?;
        match case {
            Case::Memory(m) if m.op.gpu_only() => transfer_peak(spec, m.op),
            Case::Memory(m) => {
                let metric = self.metric_key(case);
                if metric != "memory.dram" {
                    let level = self
                        .device
                        .level_for(m.working_set)
                        .map(|l| l.name.clone())
                        .unwrap_or_default();
                    return Err(format!(
                        "the working set fits in {level}; {} publishes no {level} bandwidth",
                        spec.name
                    ));
                }
                spec.memory_peak()
                    .ok_or_else(|| format!("{} lists no memory bandwidth", spec.name))
            }
            Case::Gemm(g) => spec
                .compute_peak(g.dtype.peak_key())
                .ok_or_else(|| format!("{} lists no dense {} peak", spec.name, g.dtype.peak_key())),
            Case::Attention(a) => {
                // Roofline: min(peak FLOP/s, peak bandwidth x arithmetic intensity).
                let key = a.dtype.peak_key();
                let flops = spec
                    .compute_peak(key)
                    .ok_or_else(|| format!("{} lists no dense {key} peak", spec.name))?;
                let bw = spec
                    .memory_peak()
                    .ok_or_else(|| format!("{} lists no memory bandwidth", spec.name))?;
                let intensity = work.intensity().unwrap_or(0.0);
                let bound_tflops = (bw.value * 1e9 * intensity / 1e12).min(flops.value);
                let memory_bound = bound_tflops < flops.value;
                let value = match headline {
                    Headline::Flops => bound_tflops,
                    _ => bound_tflops * 1e12 / intensity.max(f64::MIN_POSITIVE) / 1e9,
                };
                Ok(Peak {
                    value,
                    unit: headline.unit().into(),
                    what: format!(
                        "roofline at {intensity:.1} FLOP/B ({}-bound: {:.0} GB/s, {:.0} TFLOP/s dense {key}) of {}",
                        if memory_bound { "memory" } else { "compute" },
                        bw.value,
                        flops.value,
                        spec.name
                    ),
                    source: format!("{}; {}", bw.source, flops.source),
                })
            }
            Case::Collective(c) => collective_peak(spec, c),
        }
    }

    /// Judges a verified measurement whose headline value is `value`.
    pub fn judge(
        &self,
        case: &Case,
        work: &Work,
        headline: Headline,
        value: f64,
        throttled: bool,
    ) -> Verdict {
        let metric = self.metric_key(case);
        let peak = match self.peak(case, work, headline) {
            Ok(p) => p,
            Err(why) => {
                let mut v = Verdict::simple(VerdictKind::NoSpec, why);
                v.metric = Some(metric);
                v.spec = self.spec.map(|s| s.id.clone());
                return v;
            }
        };
        let efficiency = value / peak.value;
        let mut verdict = Verdict {
            kind: VerdictKind::NoSpec,
            metric: Some(metric.clone()),
            efficiency: Some(efficiency),
            peak: Some(peak.clone()),
            expected: None,
            spec: self.spec.map(|s| s.id.clone()),
            reason: String::new(),
        };
        let measured = format!(
            "{} {} is {:.1}% of the {} {} {}",
            fmt_value(value),
            peak.unit,
            efficiency * 100.0,
            fmt_value(peak.value),
            peak.unit,
            peak.what
        );
        if throttled {
            verdict.kind = VerdictKind::Inconclusive;
            verdict.reason = format!(
                "{measured}, but the device throttled during the measurement, so it is not judged"
            );
            return verdict;
        }
        let Some(exp) = self.expectation(&metric) else {
            verdict.reason = format!("{measured}; no expected efficiency is set for {metric}");
            return verdict;
        };
        let (kind, tail) = if efficiency >= exp.pass {
            (
                VerdictKind::Pass,
                format!("a healthy device reaches at least {:.0}%", exp.pass * 100.0),
            )
        } else if efficiency >= exp.warn {
            (
                VerdictKind::Warn,
                format!(
                    "below the {:.0}% a healthy device reaches, above the {:.0}% failure line",
                    exp.pass * 100.0,
                    exp.warn * 100.0
                ),
            )
        } else {
            (
                VerdictKind::Fail,
                format!(
                    "below the {:.0}% failure line (healthy is {:.0}% or more)",
                    exp.warn * 100.0,
                    exp.pass * 100.0
                ),
            )
        };
        verdict.kind = kind;
        verdict.reason = format!("{measured}; {tail}");
        verdict.expected = Some(exp);
        verdict
    }
}

/// Three significant figures, no exponent for everyday magnitudes.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryLevel;
    use crate::case::{
        AttentionCase, AttentionPhase, AttentionVariant, Dtype, GemmCase, KvLayout, MemoryCase,
        MemoryOp,
    };
    use crate::work::case_work;

    const H100: &str = include_str!("../../../specs/nvidia-h100-sxm.toml");

    fn h100_device() -> DeviceInfo {
        DeviceInfo {
            backend: "cuda".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_bytes: Some(85_000_000_000),
            memory_levels: vec![
                MemoryLevel {
                    name: "L2".into(),
                    bytes: 50 << 20,
                    detail: String::new(),
                },
                MemoryLevel {
                    name: "HBM".into(),
                    bytes: 80 << 30,
                    detail: String::new(),
                },
            ],
            ..Default::default()
        }
    }

    fn db() -> SpecDb {
        SpecDb::parse(&[("nvidia-h100-sxm.toml", H100)]).unwrap()
    }

    #[test]
    fn gemm_verdicts_follow_the_product_expectation() {
        let (db, acc, dev) = (db(), Acceptance::default(), h100_device());
        let judge = Judge::new(&dev, &db, &acc);
        let case = Case::Gemm(GemmCase::new(8192, 8192, 8192, Dtype::Bf16));
        let (work, h) = case_work(&case);
        let pass = judge.judge(&case, &work, h, 800.0, false);
        assert_eq!(pass.kind, VerdictKind::Pass, "{}", pass.reason);
        assert!(
            pass.reason.contains("80.9% of the 989 TFLOP/s"),
            "{}",
            pass.reason
        );
        assert_eq!(
            judge.judge(&case, &work, h, 650.0, false).kind,
            VerdictKind::Warn
        );
        let fail = judge.judge(&case, &work, h, 400.0, false);
        assert_eq!(fail.kind, VerdictKind::Fail);
        assert!(fail.reason.contains("failure line"));
        let thr = judge.judge(&case, &work, h, 400.0, true);
        assert_eq!(thr.kind, VerdictKind::Inconclusive);
        assert!(thr.reason.contains("throttled"));
    }

    #[test]
    fn acceptance_file_overrides_spec_and_defaults() {
        let db = db();
        let text = "[expected]\n\"gemm.bf16\" = { pass = 0.9, warn = 0.85 }\n[product.\"nvidia-h100-sxm\".expected]\n\"memory.dram\" = { pass = 0.95, warn = 0.9 }\n";
        let acc = Acceptance::parse("acc.toml", text, &db).unwrap();
        let dev = h100_device();
        let judge = Judge::new(&dev, &db, &acc);
        let case = Case::Gemm(GemmCase::new(8192, 8192, 8192, Dtype::Bf16));
        let (work, h) = case_work(&case);
        assert_eq!(
            judge.judge(&case, &work, h, 800.0, false).kind,
            VerdictKind::Fail
        );
        let mem = Case::Memory(MemoryCase {
            op: MemoryOp::Triad,
            working_set: 3 << 30,
            dtype: Dtype::F64,
            peer: None,
        });
        let (work, h) = case_work(&mem);
        assert_eq!(judge.metric_key(&mem), "memory.dram");
        assert_eq!(
            judge.judge(&mem, &work, h, 3100.0, false).kind,
            VerdictKind::Warn
        );
        assert_eq!(
            judge.judge(&mem, &work, h, 3000.0, false).kind,
            VerdictKind::Fail
        );
        let bad = Acceptance::parse("acc.toml", "[product.\"h900\".expected]\n", &db).unwrap_err();
        assert!(bad.contains("h900"), "{bad}");
        let metric = Acceptance::parse(
            "acc.toml",
            "[expected]\n\"gemm.bf61\" = { pass = 0.9, warn = 0.8 }\n",
            &db,
        )
        .unwrap_err();
        assert!(
            metric.contains("gemm.bf61") && metric.contains("not a metric"),
            "{metric}"
        );
        let typo = Acceptance::parse("acc.toml", "[expectd]\n", &db).unwrap_err();
        assert!(typo.contains("expectd"), "{typo}");
    }

    #[test]
    fn cache_sized_memory_and_unknown_devices_say_no_spec() {
        let (db, acc, dev) = (db(), Acceptance::default(), h100_device());
        let judge = Judge::new(&dev, &db, &acc);
        let l2 = Case::Memory(MemoryCase {
            op: MemoryOp::Copy,
            working_set: 16 << 20,
            dtype: Dtype::F32,
            peer: None,
        });
        let (work, h) = case_work(&l2);
        let v = judge.judge(&l2, &work, h, 9000.0, false);
        assert_eq!(v.kind, VerdictKind::NoSpec);
        assert!(v.reason.contains("fits in L2"), "{}", v.reason);
        let cpu = DeviceInfo {
            backend: "host".into(),
            name: "AMD EPYC 9654".into(),
            ..Default::default()
        };
        let judge = Judge::new(&cpu, &db, &acc);
        let v = judge.judge(&l2, &work, h, 100.0, false);
        assert_eq!(v.kind, VerdictKind::NoSpec);
        assert!(
            v.reason.contains("no spec sheet matches 'AMD EPYC 9654'"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn transfers_are_judged_against_links_and_half_the_memory_bandwidth() {
        let (db, acc, dev) = (db(), Acceptance::default(), h100_device());
        let judge = Judge::new(&dev, &db, &acc);
        let case = |op| {
            Case::Memory(MemoryCase {
                op,
                working_set: 512 << 20,
                dtype: Dtype::F64,
                peer: (op == MemoryOp::Peer).then_some(1),
            })
        };
        // (op, measured GB/s, peak GB/s, verdict) on an H100 SXM: HBM 3350, PCIe Gen5
        // 128 both ways, NVLink 450 per direction.
        let table = [
            (MemoryOp::CeCopy, 1500.0, 1675.0, VerdictKind::Pass),
            (MemoryOp::H2d, 55.0, 64.0, VerdictKind::Pass),
            (MemoryOp::D2h, 24.0, 64.0, VerdictKind::Fail), // a link trained at Gen4 or x8
            (MemoryOp::Bidir, 90.0, 128.0, VerdictKind::Pass),
            (MemoryOp::Peer, 300.0, 450.0, VerdictKind::Warn),
        ];
        for (op, value, peak, kind) in table {
            let c = case(op);
            let (work, h) = case_work(&c);
            let v = judge.judge(&c, &work, h, value, false);
            assert_eq!(
                v.metric.as_deref(),
                Some(format!("memory.{}", op.name()).as_str())
            );
            assert_eq!(v.peak.as_ref().unwrap().value, peak, "{op:?}");
            assert_eq!(v.kind, kind, "{op:?}: {}", v.reason);
        }
        let smem = case(MemoryOp::Smem);
        let (work, h) = case_work(&smem);
        let v = judge.judge(&smem, &work, h, 30_000.0, false);
        assert_eq!(v.kind, VerdictKind::NoSpec);
        assert!(
            v.reason.contains("no shared-memory bandwidth"),
            "{}",
            v.reason
        );
        // Throttled: measured but not judged.
        let c = case(MemoryOp::H2d);
        let (work, h) = case_work(&c);
        let v = judge.judge(&c, &work, h, 20.0, true);
        assert_eq!(v.kind, VerdictKind::Inconclusive);
        assert!(check_metric_name("memory.peer").is_ok());
        assert!(check_metric_name("memory.smem_sm").is_ok());
        assert!(check_metric_name("memory.triad").is_err());
        assert!(check_metric_name("attention.decode_mla").is_ok());
        assert!(default_expectation("attention.decode_mla").unwrap().pass < 0.5);
    }

    #[test]
    fn attention_uses_the_roofline() {
        let (db, acc, dev) = (db(), Acceptance::default(), h100_device());
        let judge = Judge::new(&dev, &db, &acc);
        // GQA decode, g = 8: intensity ~8 FLOP/B -> memory-bound; peak in GB/s = 3350.
        let case = Case::Attention(AttentionCase {
            variant: AttentionVariant::Gqa,
            phase: AttentionPhase::Decode,
            causal: false,
            batch: 8,
            q_len: 1,
            kv_len: 8192,
            q_heads: 64,
            kv_heads: 8,
            head_dim_qk: 128,
            head_dim_v: 128,
            dtype: Dtype::Bf16,
            kv_dtype: None,
            kv_layout: KvLayout::Contiguous,
            model: None,
        });
        let (work, h) = case_work(&case);
        let peak = judge.peak(&case, &work, h).unwrap();
        assert_eq!(peak.unit, "GB/s");
        assert!((peak.value - 3350.0).abs() < 1e-6, "{}", peak.value);
        assert!(peak.what.contains("memory-bound"));
    }
}
