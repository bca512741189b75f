//! solbench-core: the model every backend and report shares.
//!
//! * [`case`] — what to measure, as data; [`work`] — bytes and FLOPs per iteration;
//! * [`backend`] — the `Backend` → `Device` → `Workload` traits backends implement;
//! * [`runner`] — warm-up, timed samples, verification, failure isolation;
//! * [`stats`] — median, min, max, p99, coefficient of variation;
//! * [`spec`] and [`verdict`] — spec sheets, expected efficiencies, PASS/WARN/FAIL;
//! * [`result`] — the versioned JSON Lines result file;
//! * [`suite`] — profiles and user suite files.
//!
//! No FFI and no GPU code lives here.

pub mod backend;
pub mod case;
pub mod env;
pub mod gemm_shapes;
pub mod numeric;
pub mod presets;
pub mod random;
pub mod result;
pub mod runner;
pub mod size;
pub mod spec;
pub mod stats;
pub mod suite;
pub mod verdict;
pub mod work;

pub use backend::{
    Availability, Backend, Check, Device, DeviceInfo, MemoryLevel, Notes, PrepareError, RunError,
    Workload,
};
pub use case::{Case, Dtype, Family};
pub use work::{ByteCounting, Headline, Work};
