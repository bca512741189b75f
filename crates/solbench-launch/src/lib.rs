//! solbench-launch: how the processes of a multi-process solbench run find each other.
//!
//! A collective benchmark with one process per GPU is started by a launcher (`mpirun`,
//! `srun`, `torchrun`, Hydra's `mpiexec`). Each process must learn its rank, the world
//! size and its local rank (which GPU is its), then meet the others to share the NCCL
//! unique id, and at the end hand its numbers to rank 0, which writes the result file.
//! This crate does both halves, with the standard library only:
//!
//! * [`launch`]: which launcher started this process and what its variables say
//!   ([`detect`], [`detect_from_env`]), where rank 0 listens ([`Endpoint`]) and the job
//!   token that keeps two jobs apart. Pure functions of an environment lookup.
//! * [`rendezvous`]: [`Rendezvous`], a small TCP protocol: rank 0 listens, the others
//!   connect; then [`Rendezvous::broadcast`], [`Rendezvous::gather`],
//!   [`Rendezvous::barrier`] and [`Rendezvous::abort`]. Every wait has a deadline, and a
//!   rank that dies, never joins, hangs or aborts makes every other rank fail with one
//!   sentence naming it. The module docs describe the protocol and the failure model.
//!
//! Typical use (the collectives command):
//!
//! ```no_run
//! use solbench_launch::{detect_from_env, Rendezvous, RendezvousConfig, Timeouts};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let launch = detect_from_env()?; // None: a single process
//! let mut rdv = match &launch {
//!     Some(l) => Rendezvous::join(RendezvousConfig::from_launch(l, Timeouts::from_env()?))?,
//!     None => Rendezvous::single(),
//! };
//! let id = rdv.broadcast(&[0u8; 128])?; // rank 0's NCCL unique id, everywhere
//! // ... create the communicator, run, measure ...
//! let mine = b"this rank's numbers as JSON".to_vec();
//! if let Some(all) = rdv.gather(&mine)? {
//!     // rank 0: all[r] is rank r's bytes; write the result file
//! }
//! rdv.barrier()?;
//! # let _ = id; Ok(()) }
//! ```

pub mod error;
pub mod launch;
pub mod rendezvous;
mod slurm;
mod wire;

pub use error::{FailureKind, LaunchError, RendezvousError};
pub use launch::{detect, detect_from_env, Endpoint, Launch, Launcher, Timeouts};
pub use rendezvous::{default_label, FailureWatch, Rendezvous, RendezvousConfig};
pub use wire::MAX_DATA_BYTES;
