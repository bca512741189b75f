//! The commands behind the CLI: choose a backend, plan, run, render. Errors returned as
//! `Err(sentence)` become exit code 2; a run returns 0 (all passed) or 1 (a verdict
//! failed, a result was wrong or a case errored).

use crate::{assets, BackendChoice, CommonArgs, GemmArgs, RunArgs};
use solbench_core::backend::{Availability, Backend};
use solbench_core::case::Family;
use solbench_core::env::{
    available_memory_bytes, now_compact, now_rfc3339, HostEnvironment, SolbenchVersion,
};
use solbench_core::result::{CaseRecord, Record, ResultFile, ResultWriter, RunRecord};
use solbench_core::runner::{Progress, Sweep, Tally};
use solbench_core::size::format_size;
use solbench_core::spec::SpecDb;
use solbench_core::suite::{PlanTarget, Suite, PROFILES};
use solbench_core::verdict::{fmt_value, Acceptance, Judge};
use solbench_core::Case;
use solbench_cuda::CudaBackend;
use solbench_host::HostBackend;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// Every backend this binary knows, most preferred first (`auto` takes the first available).
pub(crate) fn backends() -> Vec<Box<dyn Backend>> {
    vec![Box::new(CudaBackend::new()), Box::new(HostBackend)]
}

pub(crate) fn spec_db() -> Result<SpecDb, String> {
    SpecDb::parse(assets::SPECS).map_err(|e| {
        format!("the embedded spec database is broken ({e}); this is a bug in this build")
    })
}

pub(crate) fn version() -> SolbenchVersion {
    SolbenchVersion {
        version: env!("CARGO_PKG_VERSION").into(),
        git: env!("SOLBENCH_GIT_REV").into(),
    }
}

pub fn list() -> Result<u8, String> {
    let specs = spec_db()?;
    println!("Backends:");
    let all = backends();
    for b in &all {
        match b.availability() {
            Availability::Available { detail } => {
                println!("  {:<6} available    {detail}", b.name())
            }
            Availability::Unavailable { reason } => {
                println!("  {:<6} unavailable  {reason}", b.name())
            }
        }
    }
    println!("\nDevices:");
    for b in &all {
        if !matches!(b.availability(), Availability::Available { .. }) {
            continue;
        }
        match b.devices() {
            Ok(devs) => {
                for d in devs {
                    let levels: Vec<String> = d
                        .memory_levels
                        .iter()
                        .map(|l| format!("{} {} ({})", l.name, format_size(l.bytes), l.detail))
                        .collect();
                    let matched = specs.match_device(&d).ok().flatten();
                    let spec = match specs.match_device(&d) {
                        Ok(Some(s)) => format!("spec: {} ({})", s.id, s.name),
                        Ok(None) => {
                            "spec: none matches, so results are not judged (NO SPEC)".into()
                        }
                        Err(e) => format!("spec: {e}"),
                    };
                    println!("  {}:{}  {}", d.backend, d.index, d.name);
                    println!("      {}", d.arch.clone().unwrap_or_default());
                    println!("      memory: {}", levels.join(", "));
                    println!("      {spec}");
                    if let Some(line) = gpu_summary(&d) {
                        println!("      {line}");
                    }
                    if let Some(t) = d.properties.get("memory_bandwidth_theoretical_gb_s") {
                        let sheet = matched
                            .and_then(|s| s.memory_peak())
                            .map(|p| format!("; spec sheet {} GB/s", fmt_value(p.value)))
                            .unwrap_or_default();
                        println!("      memory bandwidth: {t} GB/s from the driver's clock x bus width{sheet}");
                    }
                    if let Some(t) = d.properties.get("telemetry") {
                        println!("      telemetry: {t}");
                    }
                }
            }
            Err(e) => println!("  {}: cannot list devices: {e}", b.name()),
        }
    }
    println!("\nProfiles (solbench run --profile NAME; copy one to start a --suite file):");
    for (name, _) in PROFILES {
        let suite = Suite::profile(name)?;
        println!("  {:<9} {}", name, suite.description.unwrap_or_default());
    }
    Ok(0)
}

/// One line of GPU properties for `solbench list` (compute capability, SMs, clocks, L2).
fn gpu_summary(d: &solbench_core::backend::DeviceInfo) -> Option<String> {
    let p = &d.properties;
    let cc = p.get("compute_capability")?;
    let get = |k: &str| p.get(k).cloned().unwrap_or_else(|| "?".into());
    Some(format!(
        "compute capability {cc}, {} SMs at up to {} MHz, memory clock {} MHz on a {}-bit bus, L2 {}, {} copy engines, driver {}",
        get("sm_count"),
        get("sm_clock_max_mhz"),
        get("memory_clock_mhz"),
        get("memory_bus_width_bits"),
        p.get("l2_cache_bytes")
            .and_then(|v| v.parse::<u64>().ok())
            .map(format_size)
            .unwrap_or_else(|| "?".into()),
        get("copy_engines"),
        d.driver.clone().unwrap_or_default()
    ))
}

pub fn specs(name: Option<&str>) -> Result<u8, String> {
    let db = spec_db()?;
    let Some(name) = name else {
        println!(
            "{:<22} {:<34} {:>10} {:>10} {:>10}",
            "id", "name", "mem GB/s", "BF16 TF/s", "FP8 TF/s"
        );
        for s in &db.specs {
            let v = |p: Option<solbench_core::spec::Peak>| {
                p.map(|p| fmt_value(p.value)).unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<22} {:<34} {:>10} {:>10} {:>10}",
                s.id,
                s.name,
                v(s.memory_peak()),
                v(s.compute_peak("bf16")),
                v(s.compute_peak("fp8"))
            );
        }
        println!("\nAll FLOP figures are dense (no 2:4 sparsity). `solbench specs NAME` shows one sheet with sources.");
        return Ok(0);
    };
    let hits = db.find(name);
    match hits.len() {
        0 => Err(format!(
            "no spec sheet matches '{name}'; known products: {}",
            db.specs
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        1 => {
            let s = hits[0];
            println!("{} ({}, {} {})", s.name, s.id, s.vendor, s.architecture);
            let show = |section: &str, items: Vec<(String, &solbench_core::spec::SpecValue)>| {
                if items.is_empty() {
                    return;
                }
                println!("\n[{section}]");
                for (k, v) in items {
                    println!("  {k:<30} {:>10}   {}", fmt_value(v.value), v.source);
                    if let Some(n) = &v.note {
                        println!("  {:<30} {:>10}   note: {n}", "", "");
                    }
                }
            };
            let m = &s.memory;
            show(
                "memory",
                [
                    ("capacity_gb", &m.capacity_gb),
                    ("bandwidth_gb_s", &m.bandwidth_gb_s),
                    ("l2_cache_mb", &m.l2_cache_mb),
                    ("infinity_cache_mb", &m.infinity_cache_mb),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v)))
                .collect(),
            );
            show(
                "compute (dense TFLOP/s)",
                s.compute.iter().map(|(k, v)| (k.clone(), v)).collect(),
            );
            let i = &s.interconnect;
            show(
                "interconnect",
                [
                    ("scale_up_gb_s", &i.scale_up_gb_s),
                    (
                        "scale_up_per_direction_gb_s",
                        &i.scale_up_per_direction_gb_s,
                    ),
                    ("pcie_gb_s", &i.pcie_gb_s),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v)))
                .collect(),
            );
            show(
                "device",
                s.device.iter().map(|(k, v)| (k.clone(), v)).collect(),
            );
            if !s.expected.is_empty() {
                println!("\n[expected] (healthy: measured/peak >= pass; below warn is FAIL)");
                for (k, e) in &s.expected {
                    println!(
                        "  {k:<14} pass {:.0}%  warn {:.0}%   {}",
                        e.pass * 100.0,
                        e.warn * 100.0,
                        e.why.clone().unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        _ => Err(format!(
            "'{name}' matches several products ({}); give one id",
            hits.iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Progress on stderr: one rewritten line on a terminal, one line per case otherwise.
struct StderrProgress {
    tty: bool,
    started: Instant,
    case_started: Instant,
}

impl Progress for StderrProgress {
    fn case_started(&mut self, index: usize, total: usize, case: &Case) {
        self.case_started = Instant::now();
        if self.tty {
            eprint!("\r\x1b[2K[{}/{}] {case} ...", index + 1, total);
        }
    }

    fn case_finished(&mut self, index: usize, total: usize, r: &CaseRecord) {
        let value = r
            .measurement
            .as_ref()
            .map(|m| format!("{} {}", fmt_value(m.value), m.unit))
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "[{}/{}] {}: {value} {} ({:.1} s, {:.0} s total)",
            index + 1,
            total,
            r.case,
            r.verdict.kind.label(),
            self.case_started.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            if index + 1 == total {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

pub fn run(args: &RunArgs) -> Result<u8, String> {
    let (suite, suite_name) = match &args.suite {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read suite file {}: {e}", p.display()))?;
            (
                Suite::parse(&p.display().to_string(), &text)?,
                p.display().to_string(),
            )
        }
        None => (
            Suite::profile(args.profile.name())?,
            format!("profile {}", args.profile.name()),
        ),
    };
    let common = CommonArgs {
        backend: args.backend,
        out: args.out.clone(),
        acceptance: args.acceptance.clone(),
        device: args.device,
    };
    run_suite(&suite, &suite_name, &common, &args.only)
}

/// `solbench gemm`: the flags become one `[[gemm]]` entry, validated like a suite file.
pub fn gemm(args: &GemmArgs) -> Result<u8, String> {
    use solbench_core::suite::{GemmSearch, GemmSweep, SquareSweep};
    let square = match &args.square {
        None => None,
        Some(text) => {
            let bad = || {
                format!("--square '{text}': write FROM:TO or FROM:TO:FACTOR, for example 1024:8192")
            };
            let parts: Vec<&str> = text.split(':').collect();
            let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
            match parts[..] {
                [a, b] => Some(SquareSweep {
                    from: num(a)?,
                    to: num(b)?,
                    factor: 2.0,
                }),
                [a, b, f] => Some(SquareSweep {
                    from: num(a)?,
                    to: num(b)?,
                    factor: f.trim().parse().map_err(|_| bad())?,
                }),
                _ => return Err(bad()),
            }
        }
    };
    let search = match (&args.m, &args.n, &args.k) {
        (None, None, None) => None,
        (Some(m), Some(n), Some(k)) => Some(GemmSearch {
            m: m.clone(),
            n: n.clone(),
            k: k.clone(),
            max_shapes: Some(args.max_shapes),
        }),
        _ => {
            return Err(
                "a search needs all three of --m, --n and --k (each START:STOP:STEP or a list)"
                    .into(),
            )
        }
    };
    let nothing =
        args.shape.is_empty() && square.is_none() && args.preset.is_empty() && search.is_none();
    let entry = GemmSweep {
        dtypes: args.dtype.clone(),
        shapes: (!args.shape.is_empty()).then(|| args.shape.clone()),
        // With no shapes at all, a square sweep from 1024 to 8192.
        square: if nothing {
            Some(SquareSweep {
                from: 1024,
                to: 8192,
                factor: 2.0,
            })
        } else {
            square
        },
        presets: (!args.preset.is_empty()).then(|| args.preset.clone()),
        tokens: (!args.tokens.is_empty()).then(|| args.tokens.clone()),
        search,
        out_dtype: args.out_dtype.clone(),
        fast_accum: args.fast_accum.then_some(true),
        workspace: args.workspace.clone(),
        algorithms: args.algos,
    };
    let mut suite = Suite {
        name: Some("gemm".into()),
        description: Some("solbench gemm flags".into()),
        gemm: vec![entry],
        ..Suite::default()
    };
    suite.settings.warmup_ms = args.warmup_ms;
    suite.settings.min_time_ms = args.min_time_ms;
    suite
        .validate()
        .map_err(|e| format!("the gemm flags: {}", flag_names(&e)))?;
    run_suite(&suite, "solbench gemm", &args.common, &[])
}

/// Suite field names in an error, spelled as the gemm command's flags.
fn flag_names(e: &str) -> String {
    [
        ("gemm[0].dtypes", "--dtype"),
        ("gemm[0].shapes", "--shape"),
        ("gemm[0].square", "--square"),
        ("gemm[0].presets", "--preset"),
        ("gemm[0].tokens", "--tokens"),
        ("gemm[0].search.m", "--m"),
        ("gemm[0].search.n", "--n"),
        ("gemm[0].search.k", "--k"),
        ("gemm[0].search: ", ""),
        ("gemm[0].out_dtype", "--out-dtype"),
        ("gemm[0].workspace", "--workspace"),
        ("gemm[0].algorithms", "--algos"),
        ("settings", "the timing flags"),
    ]
    .iter()
    .fold(e.to_string(), |acc, (from, to)| acc.replace(from, to))
}

/// Plans, runs and reports a suite on the chosen backend and devices.
fn run_suite(
    suite: &Suite,
    suite_name: &str,
    args: &CommonArgs,
    only: &[String],
) -> Result<u8, String> {
    let specs = spec_db()?;
    let acceptance = match &args.acceptance {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read acceptance file {}: {e}", p.display()))?;
            Acceptance::parse(&p.display().to_string(), &text, &specs)?
        }
        None => Acceptance::default(),
    };
    let only: Vec<Family> = only
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Family::parse(s))
        .collect::<Result<_, _>>()?;
    let settings = suite.settings();

    // Choose the backend.
    let all = backends();
    let backend = match args.backend {
        BackendChoice::Auto => all
            .iter()
            .find(|b| matches!(b.availability(), Availability::Available { .. }))
            .ok_or("no backend is available on this machine")?,
        named => {
            let b = all
                .iter()
                .find(|b| b.name() == named.name())
                .ok_or_else(|| format!("this build has no {} backend", named.name()))?;
            if let Availability::Unavailable { reason } = b.availability() {
                return Err(format!("the {} backend cannot run: {reason}", b.name()));
            }
            b
        }
    };
    let devices = backend.devices()?;
    let chosen: Vec<usize> = match args.device {
        Some(i) if i < devices.len() => vec![i],
        Some(i) => {
            return Err(format!(
                "--device {i} does not exist: the {} backend has {} device(s), numbered from 0",
                backend.name(),
                devices.len()
            ))
        }
        None => (0..devices.len()).collect(),
    };

    // Plan every device before measuring anything, so bad input fails fast.
    let mut plans = Vec::new();
    for &i in &chosen {
        let d = &devices[i];
        let budget = if backend.name() == "host" {
            available_memory_bytes().unwrap_or(1 << 30) / 2
        } else {
            d.memory_bytes.unwrap_or(1 << 30) / 10 * 8
        };
        let mut plan = suite.plan(&PlanTarget {
            device: d,
            memory_budget: budget,
            device_count: devices.len() as u32,
        })?;
        if !only.is_empty() {
            plan.cases.retain(|c| only.contains(&c.family()));
            if !only.contains(&Family::Memory) {
                plan.notes.clear(); // the planner's notes are about memory sizes
            }
        }
        plans.push((i, plan));
    }
    let planned: usize = plans.iter().map(|(_, p)| p.cases.len()).sum();
    if planned == 0 {
        return Err(format!(
            "{suite_name} has no cases{} for this backend",
            if only.is_empty() {
                String::new()
            } else {
                format!(
                    " in the families {}",
                    only.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
                )
            }
        ));
    }

    let host = HostEnvironment::detect();
    let run_id = format!("{}-{}-{}", host.hostname, now_compact(), std::process::id());
    let path = args.out.join(format!("solbench-{run_id}.jsonl"));
    let mut writer = ResultWriter::create(&path)?;
    let opened: Vec<_> = chosen
        .iter()
        .map(|&i| backend.open(i).map(|d| (i, d)))
        .collect::<Result<_, _>>()?;
    let timing = opened
        .first()
        .map(|(_, d)| d.timing_method().to_string())
        .unwrap_or_default();
    writer.append(&Record::Run(Box::new(RunRecord {
        run_id: run_id.clone(),
        started_at: now_rfc3339(),
        solbench: version(),
        host,
        backend: backend.name().into(),
        timing,
        devices: chosen.iter().map(|&i| devices[i].clone()).collect(),
        suite: suite_name.to_string(),
        argv: std::env::args().collect(),
        settings: settings.clone(),
        planned_cases: planned,
    })))?;
    eprintln!(
        "solbench {} on {} ({}): {planned} cases from {suite_name}; results go to {}",
        version().version,
        backend.name(),
        devices[chosen[0]].name,
        path.display()
    );
    for (_, plan) in &plans {
        for note in &plan.notes {
            eprintln!("note: {note}");
        }
    }

    let mut tally = Tally::default();
    let mut progress = StderrProgress {
        tty: std::io::stderr().is_terminal(),
        started: Instant::now(),
        case_started: Instant::now(),
    };
    for ((i, device), (_, plan)) in opened.iter().zip(&plans) {
        let judge = Judge::new(&devices[*i], &specs, &acceptance);
        let sweep = Sweep {
            device: device.as_ref(),
            device_index: *i,
            settings: &settings,
            judge: &judge,
            run_id: &run_id,
        };
        sweep.run(&plan.cases, &mut writer, &mut progress, &mut tally)?;
    }
    let end = tally.end_record(&run_id);
    writer.append(&Record::End(end.clone()))?;

    let shown: Vec<_> = chosen.iter().map(|&i| devices[i].clone()).collect();
    println!("{}", solbench_report::render_table(&tally.records, &shown));
    if let Some(m) = solbench_report::render_peer_matrix(&tally.records) {
        print!("{m}");
    }
    if let Some(g) = solbench_report::render_gemm_summary(&tally.records) {
        print!("{g}");
    }
    print!(
        "{}",
        solbench_report::render_summary(&tally.records, Some(&end))
    );
    println!("Bandwidth counts bytes read + written (copy engines: bytes copied, counted once; bidir: both directions summed); GEMM FLOPs are 2*M*N*K; attention FLOPs as FlashAttention counts them (docs/metrics.md).");
    println!("Results: {}", path.display());
    Ok(if tally.any_failure() { 1 } else { 0 })
}

pub fn report(file: &Path) -> Result<u8, String> {
    let (result, notes) = ResultFile::read(file)?;
    let run = result.run.as_ref().expect("parse guarantees a run record");
    println!(
        "{} — {} on {} ({}), solbench {} ({}), {}",
        file.display(),
        run.suite,
        run.host.hostname,
        run.backend,
        run.solbench.version,
        run.solbench.git,
        run.started_at
    );
    println!(
        "{}",
        solbench_report::render_table(&result.cases, &run.devices)
    );
    if let Some(m) = solbench_report::render_peer_matrix(&result.cases) {
        print!("{m}");
    }
    if let Some(g) = solbench_report::render_gemm_summary(&result.cases) {
        print!("{g}");
    }
    print!(
        "{}",
        solbench_report::render_summary(&result.cases, result.end.as_ref())
    );
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(
        if result.cases.iter().any(|c| c.verdict.kind.is_failure()) {
            1
        } else {
            0
        },
    )
}
