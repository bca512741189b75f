//! solbench-collectives: the harness every collectives library shares, as nccl-tests'
//! common part is: which sizes, which inputs (exact under any reduction order), what every
//! rank must receive, timing of back-to-back batches, `#wrong` summed over ranks, and every
//! rank's numbers gathered at rank 0. A library only implements [`comm::Communicator`].
//!
//! Bandwidth formulas (algbw, busbw factors, per-rank count rounding) live in
//! `solbench_core::work`, shared with the verdicts.

pub mod comm;
pub mod data;
pub mod driver;
pub mod sim;
