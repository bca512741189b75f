//! solbench-report: renders result files. It reads [`solbench_core::result`] records and
//! never runs anything, so the same renderers serve a live run and `solbench report`.

pub mod table;

pub use table::{render_gemm_summary, render_peer_matrix, render_summary, render_table};
