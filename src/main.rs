//! The `solbench` command line: parse, then hand over to the commands in `app`.

mod app;
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
    /// Print the table of an existing result file.
    Report {
        /// A result file written by `solbench run` (JSON Lines).
        file: PathBuf,
    },
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
