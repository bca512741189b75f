//! The `solbench` command line: parse, then hand over to the commands in `app`.

mod app;
mod collectives;
mod launch;
mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "solbench", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SOLBENCH_GIT_REV"), ")"))]
#[command(
    about = "Hold a GPU node against its speed of light: memory, GEMM, attention and collectives, verified and judged against the spec sheet."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The best available backend: a GPU backend when one works, else the host CPU.
    Auto,
    /// NVIDIA GPUs through CUDA (driver 570+ and NVRTC needed; `solbench list` says what is missing).
    Cuda,
    /// The host CPU.
    Host,
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cuda => "cuda",
            BackendChoice::Host => "host",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    Quick,
    Standard,
    Full,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Standard => "standard",
            Profile::Full => "full",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show backends (and why each is or is not available), devices, and profiles.
    List,
    /// Show the spec-sheet database, or one product's sheet with sources.
    Specs {
        /// Product id or part of its name (for example `h100` or `nvidia-h100-sxm`).
        name: Option<String>,
    },
    /// Run a profile or suite: measure, verify, judge, write a result file, print a table.
    Run(RunArgs),
    /// GEMM sweeps alone (cuBLASLt on GPUs, the gemm crate on the host), with a
    /// maximum-achievable search like mamf-finder:
    /// `solbench gemm --dtype fp8,bf16 --shape 8192x8192x8192,4096x14336x4096`.
    Gemm(Box<GemmArgs>),
    /// Collectives as nccl-tests measures them (NCCL/RCCL on GPUs, MPI on the host), one
    /// process driving every local GPU or one process per GPU under mpirun/srun/torchrun:
    /// `solbench collectives --op all_reduce,all_gather -b 32K -e 16G -f 2`.
    Collectives(Box<CollectivesArgs>),
    /// Print the table of an existing result file.
    Report {
        /// A result file written by `solbench run` (JSON Lines).
        file: PathBuf,
    },
}

/// Flags every measuring command shares.
#[derive(clap::Args)]
pub struct CommonArgs {
    /// Which backend runs the cases.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Directory for the result file.
    #[arg(long, default_value = "solbench-results")]
    pub out: PathBuf,
    /// Expected efficiencies overriding the spec sheets' (TOML); see docs/methodology.md.
    #[arg(long)]
    pub acceptance: Option<PathBuf>,
    /// Device index to run on (default: every device of the backend).
    #[arg(long)]
    pub device: Option<usize>,
}

#[derive(clap::Args)]
pub struct GemmArgs {
    /// Data types, comma-separated: fp8 (= fp8_e4m3), fp8_e5m2, bf16, f16, tf32, f32, f64;
    /// `AxB` mixes FP8 inputs (fp8_e4m3xfp8_e5m2).
    #[arg(long, short = 't', value_delimiter = ',', default_value = "bf16")]
    pub dtype: Vec<String>,
    /// Shapes MxNxK, comma-separated (8192x8192x8192,4096x14336x4096).
    #[arg(long, short = 's', value_delimiter = ',')]
    pub shape: Vec<String>,
    /// Square shapes FROM:TO[:FACTOR] (1024:8192 = 1024, 2048, 4096, 8192).
    #[arg(long)]
    pub square: Option<String>,
    /// Model presets (every projection and MLP GEMM of a layer): llama-3-8b, llama-3-70b,
    /// llama-3.1-405b, mistral-7b, qwen3-235b, deepseek-v3, gpt-oss-120b.
    #[arg(long, short = 'p', value_delimiter = ',')]
    pub preset: Vec<String>,
    /// Token counts (M) for presets (default 1,16,64,256,1024,4096,16384).
    #[arg(long, value_delimiter = ',')]
    pub tokens: Vec<u64>,
    /// Maximum-achievable search: M range START:STOP:STEP or a list (with --n and --k).
    #[arg(long)]
    pub m: Option<String>,
    /// Search: N range START:STOP:STEP or a list.
    #[arg(long)]
    pub n: Option<String>,
    /// Search: K range START:STOP:STEP or a list.
    #[arg(long)]
    pub k: Option<String>,
    /// Refuse searches of more shapes than this.
    #[arg(long, default_value_t = 4096)]
    pub max_shapes: usize,
    /// Output type (default: the input type; bf16 for FP8).
    #[arg(long)]
    pub out_dtype: Option<String>,
    /// FP8: let the tensor cores accumulate in reduced precision (recorded).
    #[arg(long)]
    pub fast_accum: bool,
    /// GPU library workspace (default 64M on cuBLASLt).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Heuristic algorithms timed per shape; the best is reported (default 8).
    #[arg(long)]
    pub algos: Option<u32>,
    /// Warm-up per shape, in milliseconds.
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// Minimum measured time per shape, in milliseconds.
    #[arg(long)]
    pub min_time_ms: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// Out-of-place then in-place, per size (as nccl-tests).
    Both,
    OutOfPlace,
    InPlace,
}

#[derive(clap::Args)]
pub struct CollectivesArgs {
    /// Operations, comma-separated: all_reduce, all_gather, reduce_scatter, broadcast,
    /// reduce, alltoall, sendrecv, or `all`.
    #[arg(long, short = 'O', value_delimiter = ',', default_value = "all_reduce")]
    pub op: Vec<String>,
    /// Smallest size (nccl-tests' -b; K, M, G are powers of 1024).
    #[arg(long, short = 'b', default_value = "32K")]
    pub min_bytes: String,
    /// Largest size (-e); capped to what memory allows, with a note.
    #[arg(long, short = 'e', default_value = "16G")]
    pub max_bytes: String,
    /// Multiply the size by this between steps (-f).
    #[arg(long, short = 'f', default_value_t = 2.0)]
    pub step_factor: f64,
    /// Collectives per timed batch (-n).
    #[arg(long, short = 'n', default_value_t = 20)]
    pub iters: u32,
    /// Untimed collectives before timing each size (-w).
    #[arg(long, short = 'w', default_value_t = 5)]
    pub warmup: u32,
    /// Checked collectives after timing (-c; 0 disables the check).
    #[arg(long, short = 'c', default_value_t = 1)]
    pub check: u32,
    /// Data types, comma-separated (-d): f32, f64, f16, bf16, fp8_e4m3, fp8_e5m2, i8, u8,
    /// i32, u32, i64, u64.
    #[arg(long, short = 'd', value_delimiter = ',', default_value = "f32")]
    pub dtype: Vec<String>,
    /// Reduction (-o, as nccl-tests): sum, prod, max, min, avg.
    #[arg(long, short = 'o', default_value = "sum")]
    pub redop: String,
    /// Root rank of broadcast and reduce (-r).
    #[arg(long, short = 'r', default_value_t = 0)]
    pub root: u32,
    /// Timed batches per size; the median is reported with its spread.
    #[arg(long, default_value_t = 5)]
    pub samples: u32,
    /// Out-of-place, in-place, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub placement: Placement,
    /// Seconds a collective may take before every rank aborts (-T).
    #[arg(long, short = 'T', default_value_t = 300)]
    pub timeout: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Which backend runs the cases.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Built-in profile (ignored when --suite is given).
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Only these families (comma-separated): memory, gemm, attention, collective.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// A suite file (TOML) instead of a built-in profile; see docs/suites.md.
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// Directory for the result file.
    #[arg(long, default_value = "solbench-results")]
    pub out: PathBuf,
    /// Expected efficiencies overriding the spec sheets' (TOML); see docs/methodology.md.
    #[arg(long)]
    pub acceptance: Option<PathBuf>,
    /// Device index to run on (default: every device of the backend).
    #[arg(long)]
    pub device: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => app::list(),
        Command::Specs { name } => app::specs(name.as_deref()),
        Command::Run(args) => app::run(&args),
        Command::Gemm(args) => app::gemm(&args),
        Command::Collectives(args) => collectives::run(&args),
        Command::Report { file } => app::report(&file),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
