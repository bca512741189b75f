//! Host collectives across real processes: `mpirun -np 2` and `-np 4` run
//! `solbench collectives --backend host` over Open MPI, every operation in and out of place;
//! every rank's output must check clean (#wrong 0) and bus bandwidth must be computed.
//! Built only with `--features mpi` (CI installs Open MPI and runs it).
#![cfg(feature = "mpi")]

use solbench_core::case::Case;
use solbench_core::result::{CaseStatus, ResultFile};
use std::process::Command;

fn mpirun(np: u32, out: &std::path::Path) -> std::process::Output {
    Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "-np", &np.to_string()])
        .arg(env!("CARGO_BIN_EXE_solbench"))
        .args([
            "collectives",
            "--backend",
            "host",
            "--op",
            "all",
            "-b",
            "4K",
            "-e",
            "256K",
            "-f",
            "8",
            "-d",
            "f32,i32",
            "-n",
            "3",
            "-w",
            "1",
            "--samples",
            "3",
            "--out",
        ])
        .arg(out)
        .output()
        .expect("mpirun (Open MPI) must be installed for this test: apt-get install openmpi-bin")
}

#[test]
fn every_operation_checks_clean_over_2_and_4_processes() {
    for np in [2u32, 4] {
        let dir = tempfile::tempdir().unwrap();
        let o = mpirun(np, dir.path());
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "np={np}\n{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout.contains("# Out of bounds values : 0 OK"), "{stdout}");
        // Only rank 0 reports: one table, one result file.
        assert_eq!(stdout.matches("# Avg bus bandwidth").count(), 1, "{stdout}");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let (result, _) = ResultFile::read(&files[0].as_ref().unwrap().path()).unwrap();
        // 7 ops x 2 types x 3 sizes x 2 placements.
        assert_eq!(result.cases.len(), 84, "np={np}");
        for c in &result.cases {
            let Case::Collective(cc) = &c.case else {
                panic!("not a collective")
            };
            assert_eq!(cc.ranks, np);
            assert_eq!(c.status, CaseStatus::Measured, "{:?}", c.verdict);
            assert_eq!(c.checks[0].mismatches, 0);
            let m = c.measurement.as_ref().unwrap();
            let alg = m.algbw.unwrap();
            let factor = solbench_core::work::bus_factor(cc.op, np);
            assert!(alg > 0.0 && (m.value - alg * factor).abs() <= 1e-9 * m.value.max(1.0));
            // Every rank's numbers are in the record.
            assert_eq!(c.notes["ranks"].as_array().unwrap().len(), np as usize);
        }
    }
}
