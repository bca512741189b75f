//! The terminal table: one row per case with value, unit, % of spec, verdict and
//! verification, followed by the reasons for every verdict that is not a plain PASS.

use solbench_core::case::Case;
use solbench_core::result::{CaseRecord, CaseStatus, EndRecord};
use solbench_core::verdict::{fmt_value, VerdictKind};
use solbench_core::DeviceInfo;
use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::{Alignment, Style};

fn level(record: &CaseRecord, device: Option<&DeviceInfo>) -> String {
    use solbench_core::case::MemoryOp;
    match (&record.case, device) {
        (Case::Memory(m), _) if m.op.is_shared_memory() => "SMEM".into(),
        (Case::Memory(m), _) if matches!(m.op, MemoryOp::H2d | MemoryOp::D2h | MemoryOp::Bidir) => {
            "host link".into()
        }
        (Case::Memory(m), _) if m.op == MemoryOp::Peer => "peer link".into(),
        (Case::Memory(m), Some(d)) if m.op == MemoryOp::CeCopy => {
            d.main_memory().map(|l| l.name.clone()).unwrap_or_default()
        }
        (Case::Memory(m), Some(d)) => d
            .level_for(m.working_set)
            .map(|l| l.name.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn verified(record: &CaseRecord) -> String {
    match record.status {
        CaseStatus::Skipped => "-".into(),
        _ if record.checks.is_empty() => "not run".into(),
        _ => {
            let ok = record.checks.iter().all(|c| c.passed);
            let compared: u64 = record.checks.iter().map(|c| c.compared).max().unwrap_or(0);
            if ok {
                format!("ok ({} x{})", compact(compared), record.checks.len())
            } else {
                "WRONG".into()
            }
        }
    }
}

fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=9_999_999 => format!("{}k", n / 1000),
        _ => format!("{}M", n / 1_000_000),
    }
}

/// The results table. `devices` gives each record's device (by index) for level names.
pub fn render_table(records: &[CaseRecord], devices: &[DeviceInfo]) -> String {
    let mut b = Builder::default();
    b.push_record([
        "#",
        "family",
        "case",
        "size / shape",
        "level",
        "value",
        "unit",
        "cov",
        "% spec",
        "verdict",
        "verified",
    ]);
    for r in records {
        let dev = devices.iter().find(|d| d.index == r.device);
        let (value, unit, cov) = match &r.measurement {
            Some(m) => (
                fmt_value(m.value),
                m.unit.clone(),
                format!("{:.1}%", m.stats.cov * 100.0),
            ),
            None => ("-".into(), String::new(), String::new()),
        };
        let pct = r
            .verdict
            .efficiency
            .map(|e| format!("{:.1}%", e * 100.0))
            .unwrap_or_else(|| "-".into());
        b.push_record([
            r.index.to_string(),
            r.case.family().name().to_string(),
            r.case.op_name(),
            r.case.shape_label(),
            level(r, dev),
            value,
            unit,
            cov,
            pct,
            r.verdict.kind.label().to_string(),
            verified(r),
        ]);
    }
    let mut t = b.build();
    t.with(Style::rounded());
    t.modify(Columns::new(5..6), Alignment::right());
    t.modify(Columns::new(7..9), Alignment::right());
    t.to_string()
}

/// nvbandwidth's view of peer copies: one matrix per copy size, source GPU (row) to
/// destination GPU (column), GB/s counted once; `N/A` where no peer path exists (the case
/// was skipped), `WRONG`/`ERROR` where it did not verify or failed. `None` without peer
/// results.
pub fn render_peer_matrix(records: &[CaseRecord]) -> Option<String> {
    use solbench_core::case::MemoryOp;
    use std::collections::BTreeMap;
    // size -> (src, dst) -> cell
    let mut by_size: BTreeMap<u64, BTreeMap<(usize, usize), String>> = BTreeMap::new();
    for r in records {
        let Case::Memory(m) = &r.case else { continue };
        let (MemoryOp::Peer, Some(dst)) = (m.op, m.peer) else {
            continue;
        };
        let cell = match (&r.measurement, r.verdict.kind) {
            (Some(x), _) => fmt_value(x.value),
            (None, VerdictKind::Skipped) => "N/A".into(),
            (None, kind) => kind.label().to_string(),
        };
        by_size
            .entry(m.working_set)
            .or_default()
            .insert((r.device, dst as usize), cell);
    }
    if by_size.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (size, cells) in by_size {
        let n = cells.keys().map(|&(a, b)| a.max(b) + 1).max().unwrap_or(0);
        let mut b = Builder::default();
        let mut head = vec!["src \\ dst".to_string()];
        head.extend((0..n).map(|j| format!("GPU {j}")));
        b.push_record(head);
        for i in 0..n {
            let mut row = vec![format!("GPU {i}")];
            for j in 0..n {
                row.push(if i == j {
                    "-".into()
                } else {
                    cells.get(&(i, j)).cloned().unwrap_or_default()
                });
            }
            b.push_record(row);
        }
        let mut t = b.build();
        t.with(Style::rounded());
        t.modify(Columns::new(1..), Alignment::right());
        out.push_str(&format!(
            "Peer copies, {} per copy, GB/s counted once (row: source GPU, column: destination):\n{t}\n",
            solbench_core::size::format_size(size)
        ));
    }
    Some(out)
}

/// Per GEMM type: the best shape (mamf-finder's "maximum achievable"), its share of the
/// dense spec peak, and the median over all shapes of that type. `None` without GEMMs.
pub fn render_gemm_summary(records: &[CaseRecord]) -> Option<String> {
    use std::collections::BTreeMap;
    let mut by_type: BTreeMap<String, Vec<&CaseRecord>> = BTreeMap::new();
    for r in records {
        if matches!(r.case, Case::Gemm(_)) && r.measurement.is_some() {
            by_type.entry(r.case.op_name()).or_default().push(r);
        }
    }
    if by_type.is_empty() {
        return None;
    }
    let mut out = String::from(
        "GEMM summary (TFLOP/s, dense; best = maximum achievable over the shapes measured):\n",
    );
    for (name, rs) in by_type {
        let value = |r: &CaseRecord| r.measurement.as_ref().map(|m| m.value).unwrap_or(0.0);
        let best = rs
            .iter()
            .copied()
            .max_by(|a, b| value(a).total_cmp(&value(b)))?;
        let mut values: Vec<f64> = rs.iter().map(|r| value(r)).collect();
        values.sort_by(f64::total_cmp);
        let median = if values.len() % 2 == 1 {
            values[values.len() / 2]
        } else {
            (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
        };
        let pct = best
            .verdict
            .efficiency
            .map(|e| format!(" = {:.1}% of spec", e * 100.0))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {name:<24} best {} at {}{pct}; median {} over {} shape{}\n",
            fmt_value(value(best)),
            best.case.shape_label(),
            fmt_value(median),
            values.len(),
            if values.len() == 1 { "" } else { "s" }
        ));
    }
    Some(out)
}

/// Reasons for every verdict other than PASS (grouping identical NO SPEC reasons), then
/// the totals.
pub fn render_summary(records: &[CaseRecord], end: Option<&EndRecord>) -> String {
    let mut out = String::new();
    let mut no_spec: Vec<(String, usize)> = Vec::new();
    for r in records {
        match r.verdict.kind {
            VerdictKind::Pass => {}
            VerdictKind::NoSpec => {
                // Group by reason so a whole host sweep prints one line.
                let key = r.verdict.reason.clone();
                match no_spec.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += 1,
                    None => no_spec.push((key, 1)),
                }
            }
            kind => out.push_str(&format!(
                "  #{} {} {}: {}: {}\n",
                r.index,
                r.case.op_name(),
                r.case.shape_label(),
                kind.label(),
                r.verdict.reason
            )),
        }
    }
    for (reason, n) in no_spec {
        out.push_str(&format!(
            "  NO SPEC ({n} case{}): {reason}\n",
            if n == 1 { "" } else { "s" }
        ));
    }
    if let Some(e) = end {
        out.push_str(&format!(
            "{} cases: {} measured and verified, {} PASS, {} WARN, {} FAIL, {} WRONG, {} errors, {} skipped, {} not judged (no spec), {} inconclusive\n",
            e.cases, e.measured, e.passed, e.warned, e.failed, e.wrong, e.errors, e.skipped, e.no_spec, e.inconclusive
        ));
    } else {
        out.push_str(&format!(
            "{} cases recorded; the run did not finish (no end record)\n",
            records.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use solbench_core::case::{Dtype, MemoryCase, MemoryOp};
    use solbench_core::verdict::Verdict;

    fn rec(index: usize, kind: VerdictKind, reason: &str) -> CaseRecord {
        CaseRecord {
            run_id: "r".into(),
            index,
            device: 0,
            case: Case::Memory(MemoryCase {
                op: MemoryOp::Triad,
                working_set: 1 << 20,
                dtype: Dtype::F64,
                peer: None,
            }),
            status: if kind == VerdictKind::Skipped {
                CaseStatus::Skipped
            } else {
                CaseStatus::Failed
            },
            started_at: String::new(),
            finished_at: String::new(),
            work: None,
            measurement: None,
            checks: vec![],
            telemetry: None,
            notes: Default::default(),
            verdict: Verdict::simple(kind, reason),
        }
    }

    #[test]
    fn gemm_summary_names_the_best_shape_and_the_median() {
        use solbench_core::case::GemmCase;
        let mut rows = Vec::new();
        for (i, (m, v, eff)) in [(1024, 500.0, 0.5), (4096, 790.0, 0.8), (8192, 700.0, 0.71)]
            .into_iter()
            .enumerate()
        {
            let mut r = rec(i, VerdictKind::Pass, "");
            r.case = Case::Gemm(GemmCase::new(m, m, m, Dtype::Bf16));
            r.measurement = Some(measurement(v, "TFLOP/s"));
            r.verdict.efficiency = Some(eff);
            rows.push(r);
        }
        assert!(render_gemm_summary(&rows[..0]).is_none());
        let s = render_gemm_summary(&rows).unwrap();
        assert!(
            s.contains("bf16")
                && s.contains(
                    "best 790 at 4096x4096x4096 = 80.0% of spec; median 700 over 3 shapes"
                ),
            "{s}"
        );
    }

    fn measurement(v: f64, unit: &str) -> solbench_core::result::Measurement {
        solbench_core::result::Measurement {
            headline: solbench_core::work::Headline::Bandwidth,
            value: v,
            best: v,
            unit: unit.into(),
            stats: solbench_core::stats::Stats {
                samples: 3,
                iters_per_sample: 1,
                median_s: 1.0,
                min_s: 1.0,
                max_s: 1.0,
                p99_s: 1.0,
                mean_s: 1.0,
                cov: 0.0,
            },
            gb_per_s: v,
            tflop_per_s: 0.0,
            algbw: None,
        }
    }

    #[test]
    fn peer_results_form_a_matrix() {
        let mut rows = Vec::new();
        for (dev, dst, value) in [
            (0, 1, Some(380.5)),
            (1, 0, Some(377.0)),
            (0, 2, None),
            (2, 0, Some(41.0)),
        ] {
            let mut r = rec(
                rows.len(),
                if value.is_some() {
                    VerdictKind::Pass
                } else {
                    VerdictKind::Skipped
                },
                "",
            );
            r.device = dev;
            r.case = Case::Memory(MemoryCase {
                op: MemoryOp::Peer,
                working_set: 512 << 20,
                dtype: Dtype::F64,
                peer: Some(dst),
            });
            r.measurement = value.map(|v| measurement(v, "GB/s"));
            rows.push(r);
        }
        assert!(render_peer_matrix(&rows[..0]).is_none());
        let m = render_peer_matrix(&rows).unwrap();
        assert!(m.contains("512 MiB per copy"), "{m}");
        let line = |name: &str| {
            m.lines()
                .find(|l| l.contains(name) && !l.contains("src"))
                .unwrap()
                .to_string()
        };
        let g0 = line("│ GPU 0");
        assert!(g0.contains("380") && g0.contains("N/A"), "{m}");
        let g1 = line("│ GPU 1");
        assert!(g1.contains("377"), "{m}");
        let g2 = line("│ GPU 2");
        assert!(g2.contains("41.0"), "{m}");
    }

    #[test]
    fn table_has_a_row_per_case_and_summary_explains_non_passes() {
        let rows = vec![
            rec(0, VerdictKind::Skipped, "no FP8 here"),
            rec(1, VerdictKind::NoSpec, "no spec"),
            rec(2, VerdictKind::NoSpec, "no spec"),
        ];
        let t = render_table(&rows, &[]);
        assert_eq!(t.lines().count(), 3 + 4, "{t}");
        assert!(t.contains("SKIPPED") && t.contains("NO SPEC") && t.contains("1 MiB f64"));
        let s = render_summary(&rows, None);
        assert!(
            s.contains("#0 triad 1 MiB f64: SKIPPED: no FP8 here"),
            "{s}"
        );
        assert!(s.contains("NO SPEC (2 cases): no spec"), "{s}");
        assert!(s.contains("did not finish"));
    }
}
