//! The runner: for each case, prepare → first run → verify → warm up → timed samples →
//! verify again → statistics → verdict → append to the result file. A case that is
//! unsupported, fails, panics or produces a wrong result is recorded with its reason
//! and the sweep goes on.

use crate::backend::{Check, Device, PrepareError, Workload};
use crate::case::Case;
use crate::env::now_rfc3339;
use crate::result::{CaseRecord, CaseStatus, EndRecord, Measurement, Record, ResultWriter};
use crate::stats::Stats;
use crate::verdict::{Judge, Verdict, VerdictKind};
use crate::work::{case_work, Headline};
use serde::{Deserialize, Serialize};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// How long and how often to measure each case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// Untimed warm-up time per case (at least one iteration).
    pub warmup_ms: u64,
    /// Keep sampling until this much timed work is done...
    pub min_time_ms: u64,
    /// ...and at least this many samples are taken.
    pub min_samples: u32,
    /// Stop after this many samples even if `min_time_ms` is not reached.
    pub max_samples: u32,
    /// Each sample batches enough back-to-back iterations to last about this long, so
    /// launch overhead and timer resolution stay out of the number.
    pub target_sample_ms: f64,
    /// Give up sampling a case after this long (wall clock), keeping the samples taken.
    pub max_case_ms: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            warmup_ms: 50,
            min_time_ms: 200,
            min_samples: 10,
            max_samples: 2000,
            target_sample_ms: 2.0,
            max_case_ms: 5_000,
        }
    }
}

impl RunSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.min_samples < 3 {
            return Err(format!(
                "min_samples must be at least 3 to report a spread, got {}",
                self.min_samples
            ));
        }
        if self.max_samples < self.min_samples {
            return Err(format!(
                "max_samples ({}) must be at least min_samples ({})",
                self.max_samples, self.min_samples
            ));
        }
        if !(self.target_sample_ms > 0.0 && self.target_sample_ms.is_finite()) {
            return Err(format!(
                "target_sample_ms must be a positive number, got {}",
                self.target_sample_ms
            ));
        }
        if self.max_case_ms == 0 {
            return Err("max_case_ms must be positive".into());
        }
        Ok(())
    }
}

/// Receives progress as the run goes (the CLI prints it on stderr).
pub trait Progress {
    fn case_started(&mut self, index: usize, total: usize, case: &Case);
    fn case_finished(&mut self, index: usize, total: usize, record: &CaseRecord);
}

/// Progress that prints nothing (tests, benchmarks).
pub struct Silent;

impl Progress for Silent {
    fn case_started(&mut self, _: usize, _: usize, _: &Case) {}
    fn case_finished(&mut self, _: usize, _: usize, _: &CaseRecord) {}
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Runs `f`, turning a panic inside a backend into an error, so one bad case cannot end
/// the sweep.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!("internal error while {what}: {}", panic_message(p))),
    }
}

/// Outcome of measuring one case, before it becomes a record.
struct Outcome {
    status: CaseStatus,
    measurement: Option<Measurement>,
    checks: Vec<Check>,
    telemetry: Option<crate::backend::TelemetrySummary>,
    notes: crate::backend::Notes,
    work: Option<crate::work::Work>,
    verdict: Verdict,
}

fn failed(status: CaseStatus, kind: VerdictKind, reason: String) -> Outcome {
    Outcome {
        status,
        measurement: None,
        checks: Vec::new(),
        telemetry: None,
        notes: Default::default(),
        work: None,
        verdict: Verdict::simple(kind, reason),
    }
}

fn check_failed(check: &Check, when: &str) -> String {
    format!(
        "{when}: {} of {} compared values differ from the oracle beyond {} (max abs error {:.3e}, max rel error {:.3e}){}",
        check.mismatches,
        check.compared,
        check.tolerance,
        check.max_abs_err,
        check.max_rel_err,
        check.detail.as_deref().map(|d| format!("; {d}")).unwrap_or_default()
    )
}

fn measure(device: &dyn Device, case: &Case, settings: &RunSettings, judge: &Judge) -> Outcome {
    let mut workload: Box<dyn Workload + '_> =
        match catch_unwind(AssertUnwindSafe(|| device.prepare(case))) {
            Ok(Ok(w)) => w,
            Ok(Err(PrepareError::Unsupported(why))) => {
                return failed(CaseStatus::Skipped, VerdictKind::Skipped, why)
            }
            Ok(Err(PrepareError::Failed(why))) => {
                return failed(
                    CaseStatus::Failed,
                    VerdictKind::Error,
                    format!("preparing the case failed: {why}"),
                )
            }
            Err(p) => {
                return failed(
                    CaseStatus::Failed,
                    VerdictKind::Error,
                    format!("internal error while preparing: {}", panic_message(p)),
                )
            }
        };
    let mut out = failed(CaseStatus::Failed, VerdictKind::Error, String::new());
    out.work = Some(workload.work());
    out.notes = workload.notes();
    let (work, headline) = {
        let (_, headline) = case_work(case);
        (workload.work(), headline)
    };

    // First run, then verify: a wrong kernel is never timed.
    let first = guarded("running", || workload.run(1).map_err(|e| e.0));
    let first = match first {
        Ok(d) => d,
        Err(e) => {
            out.verdict = Verdict::simple(VerdictKind::Error, format!("the first run failed: {e}"));
            return out;
        }
    };
    match guarded("verifying", || workload.verify().map_err(|e| e.0)) {
        Ok(check) if check.passed => out.checks.push(check),
        Ok(check) => {
            out.status = CaseStatus::Wrong;
            out.verdict =
                Verdict::simple(VerdictKind::Wrong, check_failed(&check, "before timing"));
            out.checks.push(check);
            return out;
        }
        Err(e) => {
            out.verdict = Verdict::simple(
                VerdictKind::Error,
                format!("verification failed to run: {e}"),
            );
            return out;
        }
    }

    // Warm up, and learn how long one iteration takes.
    let warm_start = Instant::now();
    let mut per_iter = first.as_secs_f64().max(1e-9);
    while warm_start.elapsed() < Duration::from_millis(settings.warmup_ms) {
        match guarded("warming up", || workload.run(1).map_err(|e| e.0)) {
            Ok(d) => per_iter = per_iter.min(d.as_secs_f64().max(1e-9)),
            Err(e) => {
                out.verdict =
                    Verdict::simple(VerdictKind::Error, format!("a warm-up run failed: {e}"));
                return out;
            }
        }
    }
    let iters = ((settings.target_sample_ms / 1e3) / per_iter)
        .ceil()
        .clamp(1.0, 1e7) as u32;

    // Timed samples.
    let telemetry = device.start_telemetry();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut timed = 0.0;
    let mut error = None;
    loop {
        match guarded("running", || workload.run(iters).map_err(|e| e.0)) {
            Ok(d) => {
                timed += d.as_secs_f64();
                samples.push(d.as_secs_f64() / iters as f64);
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        let n = samples.len() as u32;
        let enough = n >= settings.min_samples && timed * 1e3 >= settings.min_time_ms as f64;
        let too_long = started.elapsed() > Duration::from_millis(settings.max_case_ms) && n >= 3;
        if enough || n >= settings.max_samples || too_long {
            break;
        }
    }
    out.telemetry = telemetry.map(|t| t.finish());
    if let Some(e) = error {
        out.verdict = Verdict::simple(
            VerdictKind::Error,
            format!("a timed run failed after {} samples: {e}", samples.len()),
        );
        return out;
    }

    // Verify again: the timed iterations must have left a correct result too.
    match guarded("verifying", || workload.verify().map_err(|e| e.0)) {
        Ok(check) if check.passed => out.checks.push(check),
        Ok(check) => {
            out.status = CaseStatus::Wrong;
            out.verdict = Verdict::simple(VerdictKind::Wrong, check_failed(&check, "after timing"));
            out.checks.push(check);
            return out;
        }
        Err(e) => {
            out.verdict = Verdict::simple(
                VerdictKind::Error,
                format!("verification after timing failed to run: {e}"),
            );
            return out;
        }
    }

    let Some(stats) = Stats::from_samples(&samples, iters) else {
        out.verdict = Verdict::simple(
            VerdictKind::Error,
            "the device returned no usable timings".to_string(),
        );
        return out;
    };
    let value = work.headline_value(headline, stats.median_s);
    let measurement = Measurement {
        headline,
        value,
        best: work.headline_value(headline, stats.min_s),
        unit: headline.unit().into(),
        stats,
        gb_per_s: work.bytes / stats.median_s / 1e9,
        tflop_per_s: work.flops / stats.median_s / 1e12,
        algbw: (headline == Headline::BusBandwidth).then(|| work.bytes / stats.median_s / 1e9),
    };
    let throttled = out.telemetry.as_ref().is_some_and(|t| t.throttled);
    out.verdict = judge.judge(case, &work, headline, value, throttled);
    out.notes = workload.notes();
    out.status = CaseStatus::Measured;
    out.measurement = Some(measurement);
    out
}

/// Counts of outcomes, for the end record and the exit code.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub records: Vec<CaseRecord>,
}

impl Tally {
    pub fn count(&self, kind: VerdictKind) -> usize {
        self.records
            .iter()
            .filter(|r| r.verdict.kind == kind)
            .count()
    }

    pub fn any_failure(&self) -> bool {
        self.records.iter().any(|r| r.verdict.kind.is_failure())
    }

    pub fn end_record(&self, run_id: &str) -> EndRecord {
        EndRecord {
            run_id: run_id.to_string(),
            finished_at: now_rfc3339(),
            cases: self.records.len(),
            measured: self
                .records
                .iter()
                .filter(|r| r.status == CaseStatus::Measured)
                .count(),
            passed: self.count(VerdictKind::Pass),
            warned: self.count(VerdictKind::Warn),
            failed: self.count(VerdictKind::Fail),
            wrong: self.count(VerdictKind::Wrong),
            skipped: self.count(VerdictKind::Skipped),
            errors: self.count(VerdictKind::Error),
            no_spec: self.count(VerdictKind::NoSpec),
            inconclusive: self.count(VerdictKind::Inconclusive),
        }
    }
}

/// One device's sweep: where it runs and how it is judged.
pub struct Sweep<'a> {
    pub device: &'a dyn Device,
    pub device_index: usize,
    pub settings: &'a RunSettings,
    pub judge: &'a Judge<'a>,
    pub run_id: &'a str,
}

impl Sweep<'_> {
    /// Measures `cases`, appending each record to `writer` as it finishes. Returns an
    /// error only when the result file cannot be written (nothing measured afterwards
    /// could be kept).
    pub fn run(
        &self,
        cases: &[Case],
        writer: &mut ResultWriter,
        progress: &mut dyn Progress,
        tally: &mut Tally,
    ) -> Result<(), String> {
        let total = cases.len();
        for (i, case) in cases.iter().enumerate() {
            progress.case_started(i, total, case);
            let started_at = now_rfc3339();
            let o = measure(self.device, case, self.settings, self.judge);
            let record = CaseRecord {
                run_id: self.run_id.to_string(),
                index: tally.records.len(),
                device: self.device_index,
                case: case.clone(),
                status: o.status,
                started_at,
                finished_at: now_rfc3339(),
                work: o.work,
                measurement: o.measurement,
                checks: o.checks,
                telemetry: o.telemetry,
                notes: o.notes,
                verdict: o.verdict,
            };
            writer.append(&Record::Case(Box::new(record.clone())))?;
            progress.case_finished(i, total, &record);
            tally.records.push(record);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DeviceInfo, Notes, RunError};
    use crate::case::{Dtype, GemmCase};
    use crate::spec::SpecDb;
    use crate::verdict::Acceptance;
    use crate::work::{gemm_work, Work};
    use std::cell::Cell;
    use std::rc::Rc;

    /// Behaviours a fake workload can have, keyed by the GEMM's M dimension.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Good,
        WrongAlways,
        WrongAfterTiming,
        Panics,
        FailsToRun,
    }

    struct FakeWorkload {
        case: GemmCase,
        mode: Mode,
        runs: Rc<Cell<u32>>,
        verifies: u32,
    }

    impl Workload for FakeWorkload {
        fn work(&self) -> Work {
            gemm_work(&self.case)
        }
        fn run(&mut self, iters: u32) -> Result<Duration, RunError> {
            self.runs.set(self.runs.get() + 1);
            match self.mode {
                Mode::Panics => panic!("kernel exploded"),
                Mode::FailsToRun => Err(RunError(
                    "launch failed: too many resources requested".into(),
                )),
                // 1 ms per iteration plus a little noise so statistics are non-trivial.
                _ => Ok(Duration::from_micros(
                    1000 * iters as u64 + (self.runs.get() % 3) as u64,
                )),
            }
        }
        fn verify(&mut self) -> Result<Check, RunError> {
            self.verifies += 1;
            let passed = match self.mode {
                Mode::WrongAlways => false,
                Mode::WrongAfterTiming => self.verifies == 1,
                _ => true,
            };
            Ok(Check {
                passed,
                compared: 10,
                mismatches: if passed { 0 } else { 3 },
                max_abs_err: 0.0,
                max_rel_err: 0.0,
                tolerance: "exact".into(),
                method: "fake".into(),
                detail: None,
            })
        }
        fn notes(&self) -> Notes {
            Notes::new()
        }
    }

    struct FakeDevice {
        info: DeviceInfo,
        runs: Rc<Cell<u32>>,
    }

    impl Device for FakeDevice {
        fn info(&self) -> &DeviceInfo {
            &self.info
        }
        fn timing_method(&self) -> &'static str {
            "fake"
        }
        fn prepare(&self, case: &Case) -> Result<Box<dyn Workload + '_>, PrepareError> {
            let Case::Gemm(g) = case else {
                return Err(PrepareError::Unsupported(
                    "fake device only does GEMM".into(),
                ));
            };
            let mode = match g.m {
                1 => Mode::Good,
                2 => Mode::WrongAlways,
                3 => Mode::WrongAfterTiming,
                4 => Mode::Panics,
                5 => Mode::FailsToRun,
                6 => return Err(PrepareError::Failed("out of device memory".into())),
                _ => return Err(PrepareError::Unsupported("no FP8 on this device".into())),
            };
            Ok(Box::new(FakeWorkload {
                case: g.clone(),
                mode,
                runs: self.runs.clone(),
                verifies: 0,
            }))
        }
    }

    fn run_all(ms: &[u64]) -> (Tally, u32, Vec<String>) {
        let dir = std::env::temp_dir().join(format!(
            "solbench-runner-test-{}-{}",
            std::process::id(),
            ms.iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join("-")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("r.jsonl");
        let mut writer = ResultWriter::create(&path).unwrap();
        let runs = Rc::new(Cell::new(0));
        let device = FakeDevice {
            info: DeviceInfo {
                name: "fake".into(),
                ..Default::default()
            },
            runs: runs.clone(),
        };
        let cases: Vec<Case> = ms
            .iter()
            .map(|&m| Case::Gemm(GemmCase::new(m, 64, 64, Dtype::Bf16)))
            .collect();
        let settings = RunSettings {
            warmup_ms: 0,
            min_time_ms: 10,
            min_samples: 5,
            max_samples: 50,
            target_sample_ms: 1.0,
            max_case_ms: 1000,
        };
        let (specs, acc) = (SpecDb::default(), Acceptance::default());
        let judge = Judge::new(&device.info, &specs, &acc);
        let mut tally = Tally::default();
        let sweep = Sweep {
            device: &device,
            device_index: 0,
            settings: &settings,
            judge: &judge,
            run_id: "run",
        };
        sweep
            .run(&cases, &mut writer, &mut Silent, &mut tally)
            .unwrap();

        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        (tally, runs.get(), lines)
    }

    #[test]
    fn a_good_case_is_measured_verified_twice_and_judged() {
        let (tally, _, lines) = run_all(&[1]);
        let r = &tally.records[0];
        assert_eq!(r.status, CaseStatus::Measured);
        assert_eq!(r.checks.len(), 2, "verified before and after timing");
        let m = r.measurement.as_ref().unwrap();
        assert!(m.stats.samples >= 5);
        assert_eq!(m.stats.iters_per_sample, 1);
        // 2*1*64*64 FLOP in ~1 ms.
        assert!((m.tflop_per_s - 8192.0 / 1e-3 / 1e12).abs() < 1e-9 * 1e3);
        assert_eq!(r.verdict.kind, VerdictKind::NoSpec);
        assert!(!tally.any_failure());
        assert_eq!(lines.len(), 1);
        assert!(matches!(
            crate::result::Record::from_line(&lines[0]).unwrap(),
            crate::result::Record::Case(_)
        ));
    }

    #[test]
    fn a_wrong_kernel_is_never_timed() {
        let (tally, runs, _) = run_all(&[2]);
        let r = &tally.records[0];
        assert_eq!(r.status, CaseStatus::Wrong);
        assert_eq!(r.verdict.kind, VerdictKind::Wrong);
        assert!(r.measurement.is_none());
        assert!(
            r.verdict.reason.contains("before timing: 3 of 10"),
            "{}",
            r.verdict.reason
        );
        assert_eq!(runs, 1, "only the first run happens before the check");
        assert!(tally.any_failure());
    }

    #[test]
    fn wrong_after_timing_reports_no_number() {
        let (tally, _, _) = run_all(&[3]);
        let r = &tally.records[0];
        assert_eq!(r.status, CaseStatus::Wrong);
        assert!(r.measurement.is_none());
        assert!(
            r.verdict.reason.starts_with("after timing"),
            "{}",
            r.verdict.reason
        );
    }

    #[test]
    fn failures_are_isolated_and_the_sweep_goes_on() {
        let (tally, _, lines) = run_all(&[4, 5, 6, 7, 1]);
        let kinds: Vec<VerdictKind> = tally.records.iter().map(|r| r.verdict.kind).collect();
        assert_eq!(
            kinds,
            vec![
                VerdictKind::Error,
                VerdictKind::Error,
                VerdictKind::Error,
                VerdictKind::Skipped,
                VerdictKind::NoSpec
            ]
        );
        assert!(tally.records[0].verdict.reason.contains("kernel exploded"));
        assert!(tally.records[1]
            .verdict
            .reason
            .contains("too many resources"));
        assert!(tally.records[2]
            .verdict
            .reason
            .contains("out of device memory"));
        assert_eq!(tally.records[3].status, CaseStatus::Skipped);
        assert_eq!(lines.len(), 5, "every case is written, failed or not");
        let end = tally.end_record("run");
        assert_eq!(
            (
                end.cases,
                end.measured,
                end.errors,
                end.skipped,
                end.no_spec
            ),
            (5, 1, 3, 1, 1)
        );
    }

    #[test]
    fn settings_are_validated() {
        assert!(RunSettings::default().validate().is_ok());
        let bad = RunSettings {
            min_samples: 2,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("min_samples"));
        let bad = RunSettings {
            max_samples: 5,
            min_samples: 10,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_samples"));
    }
}
