//! A rank of a test job, for the multi-process tests (`tests/processes.rs`): it reads
//! its rank from the environment like `solbench collectives` will, joins, and plays one
//! scenario. Not part of the product.
//!
//! Scenarios:
//! * `job`: broadcast a 128-byte id from rank 0 (an NCCL unique id's size), gather a
//!   rank-specific payload (up to ~1 MB) at rank 0 and check every byte, barrier.
//! * `die-after-join`: join, then exit at once without closing (a crash).
//! * `stall`: join, then do nothing for a minute (a hang).
//! * `abort`: join, then abort the job with a reason.
//!
//! Prints `rank R id <hex>`, `rank R gathered N parts ok` and `rank R done` on stdout;
//! on failure `rank R error [kind]: sentence` on stderr and exit status 1 (2 when the
//! environment is unusable).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use solbench_launch::{detect_from_env, Rendezvous, RendezvousConfig, RendezvousError, Timeouts};

/// Rank `rank`'s gather payload: long enough to span many TCP segments for the higher
/// ranks, different for every rank and every byte position.
fn payload(rank: usize) -> Vec<u8> {
    (0..rank * 300_000 + 5)
        .map(|i| ((i * 31 + rank * 7) % 251) as u8)
        .collect()
}

/// An id that differs from run to run, so the test can tell it travelled from rank 0.
fn unique_id() -> Vec<u8> {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut x = seed | 1;
    (0..128)
        .map(|_| {
            // xorshift64: enough to make each run's id different.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_job(rdv: &mut Rendezvous) -> Result<(), RendezvousError> {
    let rank = rdv.rank();
    let id = if rdv.is_root() {
        unique_id()
    } else {
        Vec::new()
    };
    let id = rdv.broadcast(&id)?;
    println!("rank {rank} id {}", hex(&id));
    if let Some(parts) = rdv.gather(&payload(rank))? {
        for (r, part) in parts.iter().enumerate() {
            if *part != payload(r) {
                eprintln!(
                    "rank {rank} error [check]: rank {r}'s part ({} bytes) is not what it sent",
                    part.len()
                );
                std::process::exit(1);
            }
        }
        println!("rank {rank} gathered {} parts ok", parts.len());
    }
    rdv.barrier()?;
    println!("rank {rank} done");
    Ok(())
}

fn main() -> ExitCode {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "job".to_string());
    let launch = match detect_from_env() {
        Ok(Some(l)) => l,
        Ok(None) => {
            eprintln!("error: no launcher variables (set SOLBENCH_RANK and SOLBENCH_WORLD_SIZE)");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let timeouts = match Timeouts::from_env() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rank = launch.rank;
    let fail = |e: RendezvousError| {
        eprintln!("rank {rank} error [{}]: {e}", e.kind());
        ExitCode::from(1)
    };
    let mut rdv = match Rendezvous::join(RendezvousConfig::from_launch(&launch, timeouts)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match scenario.as_str() {
        "job" => match run_job(&mut rdv) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        "die-after-join" => {
            println!("rank {rank} joined");
            let _ = std::io::stdout().flush();
            // No close, no goodbye: what a crash looks like to the others.
            std::process::exit(17);
        }
        "stall" => {
            println!("rank {rank} joined");
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(60));
            ExitCode::SUCCESS
        }
        "abort" => fail(rdv.abort("simulated NCCL failure")),
        other => {
            eprintln!("error: unknown scenario '{other}'");
            ExitCode::from(2)
        }
    }
}
