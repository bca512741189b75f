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
    match (&record.case, device) {
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
