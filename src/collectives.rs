//! `solbench collectives`: the nccl-tests sweep over the shared harness
//! (crates/solbench-collectives), on NCCL/RCCL (GPUs) or MPI (host), every rank's numbers
//! gathered at rank 0, which alone prints and writes the result file.

use crate::app::{backends, spec_db, version};
use crate::{BackendChoice, CollectivesArgs, Placement};
use solbench_collectives::comm::Communicator;
use solbench_collectives::driver::{run_case, Outcome, Settings};
use solbench_core::backend::{Availability, Check, DeviceInfo};
use solbench_core::case::{Case, CollectiveCase, CollectiveOp};
use solbench_core::env::{now_compact, now_rfc3339, HostEnvironment};
use solbench_core::result::{CaseRecord, CaseStatus, Measurement, Record, ResultWriter, RunRecord};
use solbench_core::runner::{RunSettings, Tally};
use solbench_core::stats::Stats;
use solbench_core::suite::{collective_cases, CollectiveSweep};
use solbench_core::verdict::{Acceptance, Judge, Verdict, VerdictKind};
use solbench_core::work::{collective_work, Headline};
use std::io::Write;

/// The cases of the flags, in nccl-tests' order: per op and type, each size out-of-place
/// then in-place.
fn plan(args: &CollectivesArgs, ranks: u32) -> Result<Vec<CollectiveCase>, String> {
    let ops: Vec<String> = if args.op.iter().any(|o| o == "all") {
        CollectiveOp::ALL
            .iter()
            .map(|o| o.name().to_string())
            .collect()
    } else {
        args.op.clone()
    };
    if args.root >= ranks {
        return Err(format!(
            "--root {} does not exist: the communicator has {ranks} ranks",
            args.root
        ));
    }
    let mut out = Vec::new();
    for op in &ops {
        for dtype in &args.dtype {
            let sweep = CollectiveSweep {
                ops: Some(vec![op.clone()]),
                min_bytes: Some(args.min_bytes.clone()),
                max_bytes: Some(args.max_bytes.clone()),
                step_factor: Some(args.step_factor),
                dtype: Some(dtype.clone()),
                reduce: Some(args.redop.clone()),
                in_place: Some(false),
                ranks: Some(ranks),
            };
            let cases = collective_cases(&sweep, ranks).map_err(|e| {
                e.replace(".ops: ", "--op: ")
                    .replace(".min_bytes: ", "--min-bytes: ")
                    .replace(".max_bytes: ", "--max-bytes: ")
                    .replace(".step_factor: ", "--step-factor: ")
                    .replace(".dtype: ", "--dtype: ")
                    .replace(".reduce: ", "--redop: ")
            })?;
            for c in cases {
                let Case::Collective(mut c) = c else { continue };
                c.root = args.root;
                for in_place in match args.placement {
                    Placement::Both => vec![false, true],
                    Placement::OutOfPlace => vec![false],
                    Placement::InPlace => vec![true],
                } {
                    let mut c = c.clone();
                    c.in_place = in_place;
                    out.push(c);
                }
            }
        }
    }
    Ok(out)
}

/// The communicator of the chosen backend, and the device it is judged as.
fn communicator(
    choice: BackendChoice,
    timeout: std::time::Duration,
) -> Result<(Box<dyn Communicator>, DeviceInfo, &'static str), String> {
    let all = backends();
    let cuda_ok = all
        .iter()
        .any(|b| b.name() == "cuda" && matches!(b.availability(), Availability::Available { .. }));
    let use_cuda = match choice {
        BackendChoice::Cuda => true,
        BackendChoice::Host => false,
        BackendChoice::Auto => cuda_ok,
    };
    if use_cuda {
        let cuda = all
            .iter()
            .find(|b| b.name() == "cuda")
            .ok_or("this build has no cuda backend")?;
        if let Availability::Unavailable { reason } = cuda.availability() {
            return Err(format!("the cuda backend cannot run: {reason}"));
        }
        return cuda_communicator(cuda.as_ref(), timeout);
    }
    host_communicator()
}

/// NCCL over the local GPUs (one process), or one rank of a launcher-started job.
fn cuda_communicator(
    cuda: &dyn solbench_core::backend::Backend,
    timeout: std::time::Duration,
) -> Result<(Box<dyn Communicator>, DeviceInfo, &'static str), String> {
    use solbench_cuda::nccl_world::NcclWorld;
    use solbench_nccl::{Flavor, Nccl};
    let devices = cuda.devices()?;
    let first = devices
        .first()
        .cloned()
        .ok_or("the cuda backend lists no GPU")?;
    let nccl = Nccl::load(Flavor::Nccl)?;
    if let Some(job) = crate::launch::detect_job()? {
        let ordinal = job.local_rank % devices.len();
        let coordinator = crate::launch::coordinator(&job, timeout)?;
        let world = NcclWorld::one_rank(
            nccl,
            ordinal,
            job.rank,
            job.world_size,
            coordinator,
            timeout,
        )?;
        return Ok((Box::new(world), devices[ordinal].clone(), "cuda"));
    }
    let ordinals: Vec<usize> = (0..devices.len()).collect();
    let world = NcclWorld::all_local(nccl, &ordinals, timeout)?;
    Ok((Box::new(world), first, "cuda"))
}

#[cfg(feature = "mpi")]
fn host_communicator() -> Result<(Box<dyn Communicator>, DeviceInfo, &'static str), String> {
    let world = solbench_host::mpi::init()?;
    let host = backends()
        .into_iter()
        .find(|b| b.name() == "host")
        .ok_or("no host backend")?
        .devices()?
        .into_iter()
        .next()
        .ok_or("the host backend lists no device")?;
    Ok((Box::new(world), host, "host"))
}

#[cfg(not(feature = "mpi"))]
fn host_communicator() -> Result<(Box<dyn Communicator>, DeviceInfo, &'static str), String> {
    Err("host collectives need MPI, and this solbench was built without it: install an MPI (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev) and build with `cargo build --release --features mpi`, then run `mpirun -np 4 solbench collectives --backend host`".into())
}

/// One result line per outcome, in nccl-tests' columns.
fn line(o: &Outcome) -> String {
    let c = &o.case;
    let redop = c
        .reduce
        .map(|r| format!("{r:?}").to_ascii_lowercase())
        .unwrap_or_else(|| "none".into());
    let root = if matches!(c.op, CollectiveOp::Broadcast | CollectiveOp::Reduce) {
        c.root as i64
    } else {
        -1
    };
    let head = format!(
        "{:>12} {:>12} {:>8} {:>6} {:>5} {:>12}",
        o.size_bytes,
        o.count,
        c.dtype.name(),
        redop,
        root,
        if c.in_place {
            "in-place"
        } else {
            "out-of-place"
        }
    );
    match (&o.skipped, o.time_s(), o.bandwidth()) {
        (Some(why), _, _) => format!("{head}   skipped: {why}"),
        (None, Some(t), Some((alg, bus))) => format!(
            "{head} {:>10.2} {:>9.2} {:>9.2} {:>7}",
            t * 1e6,
            alg,
            bus,
            o.wrong
                .map(|w| w.to_string())
                .unwrap_or_else(|| "N/A".into())
        ),
        _ => format!("{head}   no measurement"),
    }
}

fn record(o: &Outcome, index: usize, run_id: &str, judge: &Judge, started: String) -> CaseRecord {
    let case = Case::Collective(o.case.clone());
    let work = collective_work(&o.case);
    let mut notes = solbench_core::backend::Notes::new();
    notes.insert("count".into(), serde_json::json!(o.count));
    notes.insert(
        "ranks".into(),
        serde_json::to_value(&o.ranks).unwrap_or_default(),
    );
    let (status, measurement, checks, verdict) = if let Some(why) = &o.skipped {
        (
            CaseStatus::Skipped,
            None,
            vec![],
            Verdict::simple(VerdictKind::Skipped, why.clone()),
        )
    } else {
        let wrong = o.wrong.unwrap_or(0);
        let check = Check {
            passed: wrong == 0,
            compared: o.count * o.case.ranks as u64,
            mismatches: wrong,
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            tolerance: "exact (average: 2 ulp)".into(),
            method: "every element of every rank's output vs the value it must hold, after timing (nccl-tests' #wrong)".into(),
            detail: o.ranks.iter().find_map(|r| r.first_wrong.clone()),
        };
        let stats = Stats::from_samples(&o.samples_s, 1);
        match (wrong, stats, o.bandwidth()) {
            (0, Some(stats), Some((alg, bus))) => {
                let m = Measurement {
                    headline: Headline::BusBandwidth,
                    value: bus,
                    best: work.headline_value(Headline::BusBandwidth, stats.min_s),
                    unit: "GB/s".into(),
                    stats,
                    gb_per_s: alg,
                    tflop_per_s: 0.0,
                    algbw: Some(alg),
                };
                let v = judge.judge(&case, &work, Headline::BusBandwidth, bus, false);
                (CaseStatus::Measured, Some(m), vec![check], v)
            }
            (0, _, _) => (
                CaseStatus::Failed,
                None,
                vec![check],
                Verdict::simple(VerdictKind::Error, "no valid timing"),
            ),
            (w, _, _) => (
                CaseStatus::Wrong,
                None,
                vec![check],
                Verdict::simple(
                    VerdictKind::Wrong,
                    format!("{w} wrong elements over all ranks"),
                ),
            ),
        }
    };
    CaseRecord {
        run_id: run_id.into(),
        index,
        device: 0,
        case,
        status,
        started_at: started,
        finished_at: now_rfc3339(),
        work: Some(work),
        measurement,
        checks,
        telemetry: None,
        notes,
        verdict,
    }
}

pub fn run(args: &CollectivesArgs) -> Result<u8, String> {
    let specs = spec_db()?;
    let acceptance = match &args.common.acceptance {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read acceptance file {}: {e}", p.display()))?;
            Acceptance::parse(&p.display().to_string(), &text, &specs)?
        }
        None => Acceptance::default(),
    };
    if args.iters == 0 || args.samples == 0 {
        return Err("--iters and --samples must be at least 1".into());
    }
    // Validate the flags before touching any library (ranks checked again below).
    plan(args, u32::MAX)?;
    let (mut comm, device, backend) = communicator(
        args.common.backend,
        std::time::Duration::from_secs(args.timeout.max(1)),
    )?;
    let ranks = comm.world_size() as u32;
    let cases = plan(args, ranks)?;
    let settings = Settings {
        iters: args.iters,
        warmup: args.warmup,
        samples: args.samples,
        check: args.check,
    };
    let root = comm.is_root_process();
    let judge = Judge::new(&device, &specs, &acceptance);
    let host = HostEnvironment::detect();
    let run_id = format!("{}-{}-{}", host.hostname, now_compact(), std::process::id());
    let mut writer = None;
    if root {
        let path = args.common.out.join(format!("solbench-{run_id}.jsonl"));
        let mut w = ResultWriter::create(&path)?;
        w.append(&Record::Run(Box::new(RunRecord {
            run_id: run_id.clone(),
            started_at: now_rfc3339(),
            solbench: version(),
            host,
            backend: backend.into(),
            timing: format!(
                "{}; {} timed batches of {} collectives per size, averaged over ranks",
                comm.library(),
                args.samples,
                args.iters
            ),
            devices: vec![device.clone()],
            suite: "solbench collectives".into(),
            argv: std::env::args().collect(),
            settings: RunSettings::default(),
            planned_cases: cases.len(),
        })))?;
        eprintln!(
            "solbench {} collectives: {} ranks, {}; results go to {}",
            version().version,
            ranks,
            comm.library(),
            path.display()
        );
        for k in 0..comm.local_ranks().len() {
            let i = comm.describe(k);
            eprintln!(
                "#  rank {:>3} pid {:>7} on {} {}",
                i.rank, i.pid, i.host, i.device
            );
        }
        println!(
            "{:>12} {:>12} {:>8} {:>6} {:>5} {:>12} {:>10} {:>9} {:>9} {:>7}",
            "size (B)",
            "count",
            "type",
            "redop",
            "root",
            "placement",
            "time (us)",
            "algbw",
            "busbw",
            "#wrong"
        );
        writer = Some((w, path));
    }
    let mut tally = Tally::default();
    let mut bus_sum = 0.0;
    let mut bus_n = 0usize;
    for (index, case) in cases.iter().enumerate() {
        let started = now_rfc3339();
        let outcome = match run_case(comm.as_mut(), case, &settings) {
            Ok(o) => o,
            Err(e) => {
                // A failed collective leaves the communicator unusable: keep what was
                // measured, record the failure, stop.
                if let Some((w, _)) = writer.as_mut() {
                    let mut r = record(
                        &Outcome {
                            case: case.clone(),
                            count: 0,
                            size_bytes: 0,
                            skipped: None,
                            samples_s: vec![],
                            wrong: None,
                            ranks: vec![],
                        },
                        index,
                        &run_id,
                        &judge,
                        started,
                    );
                    r.status = CaseStatus::Failed;
                    r.verdict = Verdict::simple(VerdictKind::Error, e.clone());
                    w.append(&Record::Case(Box::new(r.clone())))?;
                    tally.records.push(r);
                    w.append(&Record::End(tally.end_record(&run_id)))?;
                }
                return Err(format!(
                    "collective {} at {} bytes failed: {e}",
                    case.op.name(),
                    case.bytes
                ));
            }
        };
        let Some(o) = outcome else { continue };
        println!("{}", line(&o));
        let _ = std::io::stdout().flush();
        if let Some((_, bus)) = o.bandwidth().filter(|_| o.skipped.is_none()) {
            bus_sum += bus;
            bus_n += 1;
        }
        let r = record(&o, index, &run_id, &judge, started);
        if let Some((w, _)) = writer.as_mut() {
            w.append(&Record::Case(Box::new(r.clone())))?;
        }
        tally.records.push(r);
    }
    let Some((mut w, path)) = writer else {
        return Ok(0);
    };
    let end = tally.end_record(&run_id);
    w.append(&Record::End(end.clone()))?;
    let wrong: u64 = tally
        .records
        .iter()
        .filter_map(|r| r.checks.first())
        .map(|c| c.mismatches)
        .sum();
    println!(
        "# Out of bounds values : {} {}",
        wrong,
        if wrong == 0 { "OK" } else { "FAILED" }
    );
    if bus_n > 0 {
        println!(
            "# Avg bus bandwidth    : {:.3} GB/s (mean over every measured line, as nccl-tests)",
            bus_sum / bus_n as f64
        );
    }
    print!(
        "{}",
        solbench_report::render_summary(&tally.records, Some(&end))
    );
    println!("Results: {}", path.display());
    Ok(if tally.any_failure() { 1 } else { 0 })
}
