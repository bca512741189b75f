//! Which launcher started this process, and what it says about the job: rank, world
//! size, local rank, the rendezvous address and a job token.
//!
//! Everything here is a pure function of an environment lookup (`Fn(&str) ->
//! Option<String>`), so every launcher and every inconsistency is unit-tested without
//! starting one. [`detect_from_env`] is the same over the process environment.
//!
//! # Precedence
//!
//! Several launchers' variables are often present at once, because launchers nest: an
//! `sbatch` script's environment (`SLURM_PROCID=0`) is inherited by the `mpirun` it
//! runs, and `torchrun` under `srun` sees the srun task's variables. The innermost
//! launcher is the one that knows this process's rank, so the order is:
//!
//! 1. **Explicit**: `SOLBENCH_RANK` + `SOLBENCH_WORLD_SIZE` (+ optional
//!    `SOLBENCH_LOCAL_RANK`, `SOLBENCH_LOCAL_WORLD_SIZE`). Nothing else is consulted
//!    for these values.
//! 2. **torchrun**: `RANK` + `WORLD_SIZE` (+ `LOCAL_RANK`, `LOCAL_WORLD_SIZE`). Both
//!    must be present; one alone is ignored, because `RANK` is a generic name that other
//!    software exports too.
//! 3. **OpenMPI**: `OMPI_COMM_WORLD_RANK` + `OMPI_COMM_WORLD_SIZE` (+ `_LOCAL_RANK`,
//!    `_LOCAL_SIZE`).
//! 4. **PMI** (MPICH, Intel MPI, Hydra, srun `--mpi=pmi2`): `PMI_RANK` + `PMI_SIZE`
//!    (+ `MPI_LOCALRANKID`, `MPI_LOCALNRANKS`). When an srun step with the same rank and
//!    size is also present, the job is that step and is reported as Slurm (which gives it
//!    a job identity and a host list).
//! 5. **Slurm**, only inside an `srun` step: `SLURM_PROCID` with `SLURM_STEP_ID` (or
//!    `SLURM_STEPID`). A batch script also has `SLURM_PROCID=0` and `SLURM_NTASKS=N`
//!    but no step id; treating it as rank 0 of N would wait for N-1 ranks that never
//!    come. World size from `SLURM_STEP_NUM_TASKS`, `SLURM_NTASKS` or `SLURM_NPROCS`;
//!    local rank `SLURM_LOCALID`; local size from `SLURM_STEP_TASKS_PER_NODE`,
//!    `SLURM_TASKS_PER_NODE` (`4(x2),3`, indexed by `SLURM_NODEID`) or
//!    `SLURM_NTASKS_PER_NODE`. Skipped when `PMIX_RANK` disagrees with `SLURM_PROCID`:
//!    then the step is a PMIx daemon's (prterun inside an allocation), not ours.
//! 6. **PMIx** alone: `PMIX_RANK`. PMIx puts no world size in the environment, so
//!    `SOLBENCH_WORLD_SIZE` must give it.
//!
//! With no launcher, [`detect`] returns `Ok(None)`: a single-process run.
//!
//! `SOLBENCH_WORLD_SIZE` and `SOLBENCH_LOCAL_RANK` may also be set next to a launcher:
//! they fill a value the launcher lacks (PMIx's world size, PMI's local rank), and a
//! disagreement with the launcher's value is an error rather than a silent choice.
//!
//! # Rendezvous address
//!
//! Host: `SOLBENCH_MASTER_ADDR`, else `MASTER_ADDR`; else, when the launcher says every
//! rank is on this node (local world size = world size), `127.0.0.1`; else, under Slurm,
//! the first host of `SLURM_STEP_NODELIST` (or `SLURM_JOB_NODELIST`), simple forms only
//! (`node[07-09]`, not `rack[1-2]-node[1-4]`), because with Slurm's default block
//! distribution task 0 runs on the first node of the step. Rank 0 checks that claim
//! against `SLURMD_NODENAME` and refuses to start if it runs elsewhere. Otherwise a
//! multi-rank job is an error asking for `MASTER_ADDR`.
//!
//! Port: `SOLBENCH_MASTER_PORT`, else `MASTER_PORT`, else one derived from the
//! launcher's job identity (20000-29999, a hash, so two jobs sharing a node get
//! different ports), else 29500. Under torchrun with `TORCHELASTIC_USE_AGENT_STORE=True`
//! the agent already serves its own store on `MASTER_PORT`, so solbench uses
//! `MASTER_PORT + 1`.
//!
//! # Job token
//!
//! Rank 0 admits only processes with its token, so that two jobs never mix (a straggler
//! of the previous job on the same port, or a second job pointed at the same host). It
//! is `SOLBENCH_JOB_TOKEN` if set; else the launcher's own identity of this run
//! (`SLURM_JOB_ID.SLURM_STEP_ID`, `OMPI_MCA_ess_base_jobid`, `OMPI_MCA_orte_ess_jobid`
//! or `PMIX_NAMESPACE` under OpenMPI, `PMIX_NAMESPACE`, `TORCHELASTIC_RUN_ID` unless it
//! is torchrun's default `none`); else derived from the launcher, rendezvous address and
//! world size. Only the detected launcher's identity is used: a variable inherited from
//! an outer launcher can differ between ranks (mpirun's local ranks lack the srun step
//! id its remote daemons have), and ranks with different tokens never form a job. The
//! token is an identity, not a secret.

use std::fmt;
use std::time::Duration;

use crate::error::LaunchError;
use crate::slurm::{first_host, TasksPerNode};

/// The largest world size accepted (the protocol carries ranks as `u32`; anything near
/// this is a typo).
pub const MAX_WORLD_SIZE: usize = 1 << 20;

/// The port used when nothing names one and the launcher has no job identity to derive
/// one from (torch's `MASTER_PORT` convention).
pub const DEFAULT_PORT: u16 = 29500;

/// Longest accepted job token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 256;

/// Which launcher started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Launcher {
    /// `SOLBENCH_RANK` / `SOLBENCH_WORLD_SIZE`.
    Explicit,
    /// `torchrun` (or `torch.distributed.launch`).
    Torchrun,
    /// OpenMPI's `mpirun` / `prterun`.
    OpenMpi,
    /// A PMI-1/PMI-2 launcher: MPICH or Intel MPI's Hydra (`mpiexec`).
    Pmi,
    /// A PMIx launcher other than OpenMPI's or Slurm's.
    Pmix,
    /// A Slurm `srun` step.
    Slurm,
}

impl Launcher {
    /// A short lower-case name (`"slurm"`), used in derived tokens and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Launcher::Explicit => "explicit",
            Launcher::Torchrun => "torchrun",
            Launcher::OpenMpi => "openmpi",
            Launcher::Pmi => "pmi",
            Launcher::Pmix => "pmix",
            Launcher::Slurm => "slurm",
        }
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::Explicit => "SOLBENCH_* variables",
            Launcher::Torchrun => "torchrun",
            Launcher::OpenMpi => "OpenMPI",
            Launcher::Pmi => "PMI (MPICH/Hydra)",
            Launcher::Pmix => "PMIx",
            Launcher::Slurm => "Slurm",
        })
    }
}

/// Where rank 0 listens: a host name or address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address, without brackets for IPv6.
    pub host: String,
    /// TCP port, 1-65535.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint from parts; `host` may be an IPv6 address in brackets.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(str::to_string)
            .unwrap_or(host);
        Self { host, port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the launcher says about this process and its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Who started the process.
    pub launcher: Launcher,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes in the job.
    pub world_size: usize,
    /// Rank among the processes on this node (picks the GPU), when the launcher says.
    pub local_rank: Option<usize>,
    /// Number of processes on this node, when the launcher says.
    pub local_world_size: Option<usize>,
    /// Where rank 0 listens. Always `Some` when `world_size > 1`.
    pub master: Option<Endpoint>,
    /// How `master` was found, in words (for logs and the run record).
    pub master_source: String,
    /// Identity of this job; rank 0 admits only processes presenting the same one.
    pub job_token: String,
    /// Where `job_token` came from, in words.
    pub token_source: String,
}

impl Launch {
    /// One line for logs: "rank 2 of 8 (local 2 of 4), started by Slurm; rendezvous at
    /// node01:24731 (...); job token slurm:1234.0 (...)".
    pub fn describe(&self) -> String {
        let local = match (self.local_rank, self.local_world_size) {
            (Some(r), Some(n)) => format!(" (local {r} of {n})"),
            (Some(r), None) => format!(" (local {r})"),
            _ => String::new(),
        };
        let master = match &self.master {
            Some(m) => format!("rendezvous at {m} ({})", self.master_source),
            None => "no rendezvous needed".to_string(),
        };
        format!(
            "rank {} of {}{local}, started by {}; {master}; job token {} ({})",
            self.rank, self.world_size, self.launcher, self.job_token, self.token_source
        )
    }
}

/// Deadlines of the rendezvous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long the job may take to assemble (every rank connected to rank 0), counted
    /// from the call to `Rendezvous::join`. Default 120 s.
    pub join: Duration,
    /// How long one operation (broadcast, gather, barrier) may wait for the slowest
    /// rank. Default 300 s.
    pub op: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            join: Duration::from_secs(120),
            op: Duration::from_secs(300),
        }
    }
}

/// Environment variable for the join timeout, in seconds (decimals allowed).
pub const JOIN_TIMEOUT_VAR: &str = "SOLBENCH_RENDEZVOUS_TIMEOUT_S";
/// Environment variable for the per-operation timeout, in seconds (decimals allowed).
pub const OP_TIMEOUT_VAR: &str = "SOLBENCH_RENDEZVOUS_OP_TIMEOUT_S";

impl Timeouts {
    /// The defaults, overridden by `SOLBENCH_RENDEZVOUS_TIMEOUT_S` (join) and
    /// `SOLBENCH_RENDEZVOUS_OP_TIMEOUT_S` (each operation) from `lookup`.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, LaunchError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let env = Env { lookup: &lookup };
        let mut t = Timeouts::default();
        if let Some(d) = env.seconds(JOIN_TIMEOUT_VAR)? {
            t.join = d;
        }
        if let Some(d) = env.seconds(OP_TIMEOUT_VAR)? {
            t.op = d;
        }
        Ok(t)
    }

    /// [`Timeouts::from_lookup`] over the process environment.
    pub fn from_env() -> Result<Self, LaunchError> {
        Self::from_lookup(process_env)
    }
}

/// Reads the process environment. A value that is not UTF-8 is passed on lossily; it
/// then fails whatever parse it is meant for, with an error naming the variable.
fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// [`detect`] over the process environment.
pub fn detect_from_env() -> Result<Option<Launch>, LaunchError> {
    detect(process_env)
}

/// Detects the launcher from `lookup` (see the module docs for the precedence) and
/// resolves the rendezvous address and job token. `Ok(None)`: no launcher, a
/// single-process run. Errors are one sentence naming the variable.
pub fn detect<F>(lookup: F) -> Result<Option<Launch>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    let env = Env { lookup: &lookup };
    let Some(mut raw) = detect_raw(&env)? else {
        if env.get("SOLBENCH_WORLD_SIZE").is_some() {
            return Err(LaunchError::new(
                "SOLBENCH_RANK",
                "SOLBENCH_WORLD_SIZE is set but SOLBENCH_RANK is not, and no launcher (OpenMPI, Slurm, PMI, PMIx, torchrun) gives this process a rank.",
            ));
        }
        return Ok(None);
    };

    // SOLBENCH_WORLD_SIZE / SOLBENCH_LOCAL_RANK next to a launcher: fill or confirm.
    if raw.launcher != Launcher::Explicit {
        if let Some(size) = env.number("SOLBENCH_WORLD_SIZE")? {
            match raw.world_size {
                None => raw.world_size = Some((size, "SOLBENCH_WORLD_SIZE")),
                Some((launcher_size, var)) if launcher_size != size => {
                    return Err(LaunchError::new(
                        "SOLBENCH_WORLD_SIZE",
                        format!("SOLBENCH_WORLD_SIZE={size} disagrees with {var}={launcher_size}."),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(local) = env.number("SOLBENCH_LOCAL_RANK")? {
            match raw.local_rank {
                None => raw.local_rank = Some((local, "SOLBENCH_LOCAL_RANK")),
                Some((launcher_local, var)) if launcher_local != local => {
                    return Err(LaunchError::new(
                        "SOLBENCH_LOCAL_RANK",
                        format!(
                            "SOLBENCH_LOCAL_RANK={local} disagrees with {var}={launcher_local}."
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }

    let (world_size, size_var) = match raw.world_size {
        Some(ws) => ws,
        None => {
            return Err(LaunchError::new(
                "SOLBENCH_WORLD_SIZE",
                format!(
                    "{} is set but {} puts no world size in the environment: set SOLBENCH_WORLD_SIZE to the number of processes.",
                    raw.rank.1, raw.launcher
                ),
            ))
        }
    };
    validate_sizes(&raw, world_size, size_var)?;

    let (rank, _) = raw.rank;
    let local_rank = raw.local_rank.map(|(v, _)| v);
    let local_world_size = raw.local_size.map(|(v, _)| v);

    let (master, master_source) = resolve_master(&env, &raw, rank, world_size, local_world_size)?;
    let (job_token, token_source) = resolve_token(&env, &raw, master.as_ref(), world_size)?;

    Ok(Some(Launch {
        launcher: raw.launcher,
        rank,
        world_size,
        local_rank,
        local_world_size,
        master,
        master_source,
        job_token,
        token_source,
    }))
}

/// A value and the variable it came from, so errors can name it.
type Sourced = (usize, &'static str);

/// What one launcher's variables say, before validation.
#[derive(Debug, Clone)]
struct Raw {
    launcher: Launcher,
    rank: Sourced,
    world_size: Option<Sourced>,
    local_rank: Option<Sourced>,
    local_size: Option<Sourced>,
    /// The launcher's identity of this run, with the variables it came from.
    identity: Option<(String, String)>,
}

fn detect_raw<F>(env: &Env<'_, F>) -> Result<Option<Raw>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    if let Some(raw) = explicit(env)? {
        return Ok(Some(raw));
    }
    if let Some(raw) = torchrun(env)? {
        return Ok(Some(raw));
    }
    if let Some(raw) = openmpi(env)? {
        return Ok(Some(raw));
    }
    if let Some(raw) = pmi(env)? {
        // srun --mpi=pmi2 sets PMI_* too; when the step agrees, it is the same job, and
        // Slurm knows more about it (a job identity, the host list).
        if let Ok(Some(step)) = slurm(env) {
            if step.rank.0 == raw.rank.0
                && step.world_size.map(|w| w.0) == raw.world_size.map(|w| w.0)
            {
                return Ok(Some(step));
            }
        }
        return Ok(Some(raw));
    }
    if let Some(raw) = slurm(env)? {
        return Ok(Some(raw));
    }
    pmix(env)
}

fn explicit<F>(env: &Env<'_, F>) -> Result<Option<Raw>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    let Some(rank) = env.number("SOLBENCH_RANK")? else {
        return Ok(None);
    };
    let size = env.required("SOLBENCH_WORLD_SIZE", "SOLBENCH_RANK")?;
    Ok(Some(Raw {
        launcher: Launcher::Explicit,
        rank: (rank, "SOLBENCH_RANK"),
        world_size: Some((size, "SOLBENCH_WORLD_SIZE")),
        local_rank: env.sourced("SOLBENCH_LOCAL_RANK")?,
        local_size: env.sourced("SOLBENCH_LOCAL_WORLD_SIZE")?,
        identity: None,
    }))
}

fn torchrun<F>(env: &Env<'_, F>) -> Result<Option<Raw>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    // RANK alone is too generic a name to act on; torchrun always sets both.
    if env.get("RANK").is_none() || env.get("WORLD_SIZE").is_none() {
        return Ok(None);
    }
    let rank = env.required("RANK", "WORLD_SIZE")?;
    let size = env.required("WORLD_SIZE", "RANK")?;
    // torchrun's --rdzv-id defaults to "none": the same for every run, so no identity.
    let identity = env
        .get("TORCHELASTIC_RUN_ID")
        .filter(|id| id != "none")
        .map(|id| (format!("torchrun:{id}"), "TORCHELASTIC_RUN_ID".to_string()));
    Ok(Some(Raw {
        launcher: Launcher::Torchrun,
        rank: (rank, "RANK"),
        world_size: Some((size, "WORLD_SIZE")),
        local_rank: env.sourced("LOCAL_RANK")?,
        local_size: env.sourced("LOCAL_WORLD_SIZE")?,
        identity,
    }))
}

fn openmpi<F>(env: &Env<'_, F>) -> Result<Option<Raw>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    const RANK: &str = "OMPI_COMM_WORLD_RANK";
    const SIZE: &str = "OMPI_COMM_WORLD_SIZE";
    if env.get(RANK).is_none() && env.get(SIZE).is_none() {
        return Ok(None);
    }
    let rank = env.required(RANK, SIZE)?;
    let size = env.required(SIZE, RANK)?;
    let identity = [
        "OMPI_MCA_ess_base_jobid",
        "OMPI_MCA_orte_ess_jobid",
        "PMIX_NAMESPACE",
    ]
    .iter()
    .find_map(|var| {
        env.get(var)
            .map(|id| (format!("openmpi:{id}"), var.to_string()))
    });
    Ok(Some(Raw {
        launcher: Launcher::OpenMpi,
        rank: (rank, RANK),
        world_size: Some((size, SIZE)),
        local_rank: env.sourced("OMPI_COMM_WORLD_LOCAL_RANK")?,
        local_size: env.sourced("OMPI_COMM_WORLD_LOCAL_SIZE")?,
        identity,
    }))
}

fn pmi<F>(env: &Env<'_, F>) -> Result<Option<Raw>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    if env.get("PMI_RANK").is_none() && env.get("PMI_SIZE").is_none() {
        return Ok(None);
    }
    let rank = env.required("PMI_RANK", "PMI_SIZE")?;
    let size = env.required("PMI_SIZE", "PMI_RANK")?;
    Ok(Some(Raw {
        launcher: Launcher::Pmi,
        rank: (rank, "PMI_RANK"),
        world_size: Some((size, "PMI_SIZE")),
        local_rank: env.sourced("MPI_LOCALRANKID")?,
        local_size: env.sourced("MPI_LOCALNRANKS")?,
        // Hydra exports no job identity; the token is derived (module docs).
        identity: None,
    }))
}

fn slurm<F>(env: &Env<'_, F>) -> Result<Option<Raw>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    let step_var = ["SLURM_STEP_ID", "SLURM_STEPID"]
        .into_iter()
        .find(|v| env.get(v).is_some());
    // Without a step id this is a batch script or an salloc shell, not a task of srun.
    let (Some(step_var), Some(_)) = (step_var, env.get("SLURM_PROCID")) else {
        return Ok(None);
    };
    let rank = env.required("SLURM_PROCID", step_var)?;
    // prterun inside an allocation starts its daemons with srun; their step variables
    // reach the application processes but describe the daemons.
    if let Some(pmix_rank) = env.number("PMIX_RANK")? {
        if pmix_rank != rank {
            return Ok(None);
        }
    }
    let size_var = ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"]
        .into_iter()
        .find(|v| env.get(v).is_some())
        .ok_or_else(|| {
            LaunchError::new(
                "SLURM_NTASKS",
                "SLURM_PROCID is set in an srun step but none of SLURM_STEP_NUM_TASKS, SLURM_NTASKS or SLURM_NPROCS is.",
            )
        })?;
    let size = env.required(size_var, "SLURM_PROCID")?;
    let local_size = slurm_local_size(env)?;
    let step = env.get(step_var).unwrap_or_default();
    let identity = ["SLURM_JOB_ID", "SLURM_JOBID"].into_iter().find_map(|var| {
        env.get(var)
            .map(|job| (format!("slurm:{job}.{step}"), format!("{var}.{step_var}")))
    });
    Ok(Some(Raw {
        launcher: Launcher::Slurm,
        rank: (rank, "SLURM_PROCID"),
        world_size: Some((size, size_var)),
        local_rank: env.sourced("SLURM_LOCALID")?,
        local_size,
        identity,
    }))
}

/// Tasks on this node: the step's distribution first (what srun actually did), then the
/// job's, then the requested `--ntasks-per-node`.
fn slurm_local_size<F>(env: &Env<'_, F>) -> Result<Option<Sourced>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    for var in ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"] {
        let Some(spec) = env.get(var) else { continue };
        let tasks = TasksPerNode::parse(&spec)
            .map_err(|why| LaunchError::new(var, format!("{var}='{spec}' {why}.")))?;
        return match env.number("SLURM_NODEID")? {
            Some(node) => match tasks.on_node(node) {
                Some(n) => Ok(Some((n, var))),
                None => Err(LaunchError::new(
                    "SLURM_NODEID",
                    format!("SLURM_NODEID={node} is past the last node of {var}='{spec}'."),
                )),
            },
            // Without the node index only a uniform distribution answers.
            None => Ok(tasks.uniform().map(|n| (n, var))),
        };
    }
    env.sourced("SLURM_NTASKS_PER_NODE")
}

fn pmix<F>(env: &Env<'_, F>) -> Result<Option<Raw>, LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    let Some(rank) = env.number("PMIX_RANK")? else {
        return Ok(None);
    };
    let identity = env
        .get("PMIX_NAMESPACE")
        .map(|ns| (format!("pmix:{ns}"), "PMIX_NAMESPACE".to_string()));
    Ok(Some(Raw {
        launcher: Launcher::Pmix,
        rank: (rank, "PMIX_RANK"),
        // Filled from SOLBENCH_WORLD_SIZE by `detect`, or an error there.
        world_size: None,
        local_rank: None,
        local_size: None,
        identity,
    }))
}

fn validate_sizes(raw: &Raw, world_size: usize, size_var: &str) -> Result<(), LaunchError> {
    let (rank, rank_var) = raw.rank;
    if world_size == 0 {
        return Err(LaunchError::new(
            size_var,
            format!("{size_var}=0: a job has at least one process."),
        ));
    }
    if world_size > MAX_WORLD_SIZE {
        return Err(LaunchError::new(
            size_var,
            format!("{size_var}={world_size} is larger than the {MAX_WORLD_SIZE} processes solbench supports."),
        ));
    }
    if rank >= world_size {
        return Err(LaunchError::new(
            rank_var,
            format!("{rank_var}={rank} is not below the world size {size_var}={world_size}."),
        ));
    }
    if let Some((local_size, local_size_var)) = raw.local_size {
        if local_size == 0 {
            return Err(LaunchError::new(
                local_size_var,
                format!("{local_size_var}=0: a node running this process has at least one."),
            ));
        }
        if local_size > world_size {
            return Err(LaunchError::new(
                local_size_var,
                format!("{local_size_var}={local_size} is larger than the world size {size_var}={world_size}."),
            ));
        }
        if let Some((local_rank, local_rank_var)) = raw.local_rank {
            if local_rank >= local_size {
                return Err(LaunchError::new(
                    local_rank_var,
                    format!(
                        "{local_rank_var}={local_rank} is not below {local_size_var}={local_size}."
                    ),
                ));
            }
        }
    }
    if let Some((local_rank, local_rank_var)) = raw.local_rank {
        if local_rank >= world_size {
            return Err(LaunchError::new(
                local_rank_var,
                format!("{local_rank_var}={local_rank} is not below the world size {size_var}={world_size}."),
            ));
        }
    }
    Ok(())
}

fn resolve_master<F>(
    env: &Env<'_, F>,
    raw: &Raw,
    rank: usize,
    world_size: usize,
    local_world_size: Option<usize>,
) -> Result<(Option<Endpoint>, String), LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    let named_host = ["SOLBENCH_MASTER_ADDR", "MASTER_ADDR"]
        .into_iter()
        .find_map(|var| env.get(var).map(|h| (h, var)));
    let mut slurm_host_var = None;
    let (host, host_source) = if let Some((host, var)) = named_host {
        let host = Endpoint::new(host, 0).host;
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(LaunchError::new(
                var,
                format!("{var}='{host}' is not a host name or address."),
            ));
        }
        (Some(host), var.to_string())
    } else if local_world_size == Some(world_size) {
        // Every rank is on this node: loopback needs no configuration and no firewall.
        (
            Some("127.0.0.1".to_string()),
            "every rank is on this node".to_string(),
        )
    } else if raw.launcher == Launcher::Slurm {
        let list = [
            "SLURM_STEP_NODELIST",
            "SLURM_JOB_NODELIST",
            "SLURM_NODELIST",
        ]
        .into_iter()
        .find_map(|var| env.get(var).map(|l| (l, var)));
        match list {
            Some((list, var)) => {
                let host = first_host(&list).map_err(|why| {
                    LaunchError::new(
                        var,
                        format!("{var}='{list}' {why}; set MASTER_ADDR to the host of rank 0."),
                    )
                })?;
                slurm_host_var = Some(var);
                (Some(host), format!("first host of {var}"))
            }
            None => (None, String::new()),
        }
    } else {
        (None, String::new())
    };

    let Some(host) = host else {
        if world_size == 1 {
            return Ok((None, "a single process needs no rendezvous".to_string()));
        }
        return Err(LaunchError::new(
            "MASTER_ADDR",
            format!(
                "{} started {world_size} processes that may span several nodes, but no rendezvous host is known: set MASTER_ADDR to the host of rank 0 (and MASTER_PORT to a free port).",
                raw.launcher
            ),
        ));
    };

    // Rank 0 listens where the others will connect; under Slurm that was a guess, so
    // check it before anyone waits for a rank 0 that is somewhere else.
    if let Some(var) = slurm_host_var {
        if rank == 0 {
            if let Some(node) = env.get("SLURMD_NODENAME") {
                if node != host {
                    return Err(LaunchError::new(
                        var,
                        format!(
                            "rank 0 runs on {node} but the first host of {var} is {host}, where the other ranks would look for it: set MASTER_ADDR to the host of rank 0."
                        ),
                    ));
                }
            }
        }
    }

    let (port, port_source) = if let Some(port) = env.port("SOLBENCH_MASTER_PORT")? {
        (port, "SOLBENCH_MASTER_PORT".to_string())
    } else if let Some(port) = env.port("MASTER_PORT")? {
        let agent_store = raw.launcher == Launcher::Torchrun
            && env.get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
        if agent_store {
            // torchrun's agent serves its TCPStore on MASTER_PORT itself.
            let shifted = if port == u16::MAX { port - 1 } else { port + 1 };
            (
                shifted,
                "MASTER_PORT + 1 (torchrun's agent store has MASTER_PORT)".to_string(),
            )
        } else {
            (port, "MASTER_PORT".to_string())
        }
    } else if let Some((identity, var)) = &raw.identity {
        (derived_port(identity), format!("derived from {var}"))
    } else {
        (DEFAULT_PORT, "default port".to_string())
    };

    let source = format!("host from {host_source}, port from {port_source}");
    Ok((Some(Endpoint { host, port }), source))
}

/// A port in 20000-29999 from a job identity: every rank of the job computes the same,
/// two jobs on one node most likely differ, and it stays below Linux's default ephemeral
/// range (32768-60999), where outgoing connections take their ports.
fn derived_port(identity: &str) -> u16 {
    // `% 10_000` is below 10 000, so the sum fits.
    20_000 + (fnv64(identity) % 10_000) as u16
}

fn resolve_token<F>(
    env: &Env<'_, F>,
    raw: &Raw,
    master: Option<&Endpoint>,
    world_size: usize,
) -> Result<(String, String), LaunchError>
where
    F: Fn(&str) -> Option<String>,
{
    if let Some(token) = env.get("SOLBENCH_JOB_TOKEN") {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(LaunchError::new(
                "SOLBENCH_JOB_TOKEN",
                format!(
                    "SOLBENCH_JOB_TOKEN is {} bytes long; the limit is {MAX_TOKEN_BYTES}.",
                    token.len()
                ),
            ));
        }
        if token.chars().any(char::is_control) {
            return Err(LaunchError::new(
                "SOLBENCH_JOB_TOKEN",
                "SOLBENCH_JOB_TOKEN contains control characters.",
            ));
        }
        return Ok((token, "SOLBENCH_JOB_TOKEN".to_string()));
    }
    if let Some((identity, var)) = &raw.identity {
        let mut token = identity.clone();
        if token.len() > MAX_TOKEN_BYTES {
            // Long namespaces are hashed rather than refused: the token only needs to be
            // equal on every rank of the job and different between jobs.
            token = format!("{}:{:016x}", raw.launcher.as_str(), fnv64(identity));
        }
        return Ok((token, var.clone()));
    }
    let at = master.map_or_else(|| "local".to_string(), |m| m.to_string());
    Ok((
        format!("{}@{at}/{world_size}", raw.launcher.as_str()),
        "derived from the launcher, rendezvous address and world size".to_string(),
    ))
}

/// FNV-1a, 64 bits: stable across platforms and releases (std's hasher is not), so every
/// rank derives the same value.
fn fnv64(s: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in s.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Typed reads over the lookup. Values are trimmed; an empty value counts as unset
/// (`export MASTER_ADDR=` in a script means "not set", not "the empty host").
struct Env<'a, F> {
    lookup: &'a F,
}

impl<F> Env<'_, F>
where
    F: Fn(&str) -> Option<String>,
{
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A non-negative integer, or `None` when unset.
    fn number(&self, name: &str) -> Result<Option<usize>, LaunchError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LaunchError::new(
                name,
                format!("{name}='{value}' is not a non-negative integer."),
            ));
        }
        value.parse::<usize>().map(Some).map_err(|_| {
            LaunchError::new(
                name,
                format!("{name}='{value}' is too large to be a rank or a count."),
            )
        })
    }

    fn sourced(&self, name: &'static str) -> Result<Option<Sourced>, LaunchError> {
        Ok(self.number(name)?.map(|v| (v, name)))
    }

    /// A number that must be present because `because` is.
    fn required(&self, name: &str, because: &str) -> Result<usize, LaunchError> {
        self.number(name)?
            .ok_or_else(|| LaunchError::new(name, format!("{because} is set but {name} is not.")))
    }

    fn port(&self, name: &str) -> Result<Option<u16>, LaunchError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.parse::<u16>() {
            Ok(port) if port > 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(port)),
            _ => Err(LaunchError::new(
                name,
                format!("{name}='{value}' is not a TCP port (1-65535)."),
            )),
        }
    }

    fn seconds(&self, name: &str) -> Result<Option<Duration>, LaunchError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        // A week is far beyond any sensible wait and keeps Duration arithmetic safe.
        match value.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 7.0 * 86_400.0 => {
                Ok(Some(Duration::from_secs_f64(s)))
            }
            _ => Err(LaunchError::new(
                name,
                format!("{name}='{value}' is not a number of seconds above 0 (at most a week)."),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn launch(pairs: &[(&str, &str)]) -> Launch {
        match detect(env(pairs)) {
            Ok(Some(l)) => l,
            other => panic!("expected a launch from {pairs:?}, got {other:?}"),
        }
    }

    fn error(pairs: &[(&str, &str)]) -> LaunchError {
        match detect(env(pairs)) {
            Err(e) => e,
            other => panic!("expected an error from {pairs:?}, got {other:?}"),
        }
    }

    const ADDR: [(&str, &str); 2] = [("MASTER_ADDR", "node0"), ("MASTER_PORT", "29600")];

    fn with_addr<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = pairs.to_vec();
        v.extend_from_slice(&ADDR);
        v
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        assert_eq!(detect(env(&[])), Ok(None));
        // A batch script: Slurm variables but no step.
        let batch = [
            ("SLURM_JOB_ID", "200505"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_TASKS_PER_NODE", "1(x4)"),
            ("SLURM_JOB_NODELIST", "gnode[10,20,25,37]"),
        ];
        assert_eq!(detect(env(&batch)), Ok(None));
        // Generic names alone are not torchrun.
        assert_eq!(detect(env(&[("RANK", "3")])), Ok(None));
        assert_eq!(detect(env(&[("WORLD_SIZE", "3")])), Ok(None));
        // Unrelated MASTER_ADDR alone.
        assert_eq!(detect(env(&ADDR)), Ok(None));
    }

    #[test]
    fn explicit_variables() {
        let l = launch(&with_addr(&[
            ("SOLBENCH_RANK", "2"),
            ("SOLBENCH_WORLD_SIZE", "4"),
            ("SOLBENCH_LOCAL_RANK", "0"),
            ("SOLBENCH_LOCAL_WORLD_SIZE", "2"),
        ]));
        assert_eq!(l.launcher, Launcher::Explicit);
        assert_eq!((l.rank, l.world_size), (2, 4));
        assert_eq!((l.local_rank, l.local_world_size), (Some(0), Some(2)));
        assert_eq!(l.master, Some(Endpoint::new("node0", 29600)));
        assert_eq!(l.job_token, "explicit@node0:29600/4");

        let e = error(&[("SOLBENCH_RANK", "0")]);
        assert_eq!(e.variable(), "SOLBENCH_WORLD_SIZE");
        assert_eq!(
            e.to_string(),
            "SOLBENCH_RANK is set but SOLBENCH_WORLD_SIZE is not."
        );

        let e = error(&[("SOLBENCH_WORLD_SIZE", "4")]);
        assert_eq!(e.variable(), "SOLBENCH_RANK");
    }

    #[test]
    fn explicit_wins_over_every_launcher() {
        let l = launch(&with_addr(&[
            ("SOLBENCH_RANK", "1"),
            ("SOLBENCH_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_RANK", "5"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("SLURM_PROCID", "7"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "8"),
        ]));
        assert_eq!(l.launcher, Launcher::Explicit);
        assert_eq!((l.rank, l.world_size), (1, 2));
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "16"),
            ("LOCAL_RANK", "5"),
            ("LOCAL_WORLD_SIZE", "8"),
            ("MASTER_ADDR", "trainer-0.example.org"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RUN_ID", "bench-42"),
        ]);
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.local_world_size),
            (5, 16, Some(5), Some(8))
        );
        assert_eq!(
            l.master,
            Some(Endpoint::new("trainer-0.example.org", 29500))
        );
        assert_eq!(l.job_token, "torchrun:bench-42");
        assert_eq!(l.token_source, "TORCHELASTIC_RUN_ID");
    }

    #[test]
    fn torchrun_default_run_id_is_not_an_identity() {
        let l = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1234"),
            ("TORCHELASTIC_RUN_ID", "none"),
        ]);
        assert_eq!(l.job_token, "torchrun@h:1234/2");
    }

    #[test]
    fn torchrun_agent_store_keeps_master_port() {
        let l = launch(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        assert_eq!(l.master, Some(Endpoint::new("h", 29401)));
        assert!(
            l.master_source.contains("MASTER_PORT + 1"),
            "{}",
            l.master_source
        );
        // SOLBENCH_MASTER_PORT is taken as given.
        let l = launch(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "29400"),
            ("SOLBENCH_MASTER_PORT", "31000"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        assert_eq!(l.master, Some(Endpoint::new("h", 31000)));
    }

    #[test]
    fn torchrun_wins_over_mpi_and_slurm() {
        // torchrun started by srun: the srun task variables describe torchrun's agent.
        let l = launch(&with_addr(&[
            ("RANK", "9"),
            ("WORLD_SIZE", "16"),
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "2"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
        ]));
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert_eq!(l.rank, 9);
    }

    #[test]
    fn openmpi_variables_and_identity() {
        let l = launch(&with_addr(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
            ("OMPI_MCA_ess_base_jobid", "1234567"),
        ]));
        assert_eq!(l.launcher, Launcher::OpenMpi);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.local_world_size),
            (3, 8, Some(3), Some(4))
        );
        assert_eq!(l.job_token, "openmpi:1234567");

        let l = launch(&with_addr(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_MCA_orte_ess_jobid", "99"),
        ]));
        assert_eq!(l.job_token, "openmpi:99");
        assert_eq!(l.local_rank, None);

        // OpenMPI 5 (PRRTE) gives a PMIx namespace.
        let l = launch(&with_addr(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("PMIX_RANK", "0"),
            ("PMIX_NAMESPACE", "prterun-node0-4242@1"),
        ]));
        assert_eq!(l.launcher, Launcher::OpenMpi);
        assert_eq!(l.job_token, "openmpi:prterun-node0-4242@1");
    }

    #[test]
    fn openmpi_inside_a_batch_script_ignores_the_batch_step() {
        let l = launch(&with_addr(&[
            ("OMPI_COMM_WORLD_RANK", "6"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_ID", "55"),
        ]));
        assert_eq!(l.launcher, Launcher::OpenMpi);
        assert_eq!(l.rank, 6);
        // Slurm's ids are not used for an OpenMPI job (they differ between ranks).
        assert_eq!(l.job_token, "openmpi@node0:29600/8");
    }

    #[test]
    fn openmpi_on_one_node_needs_no_address() {
        let l = launch(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
            ("OMPI_MCA_ess_base_jobid", "777"),
        ]);
        let master = l.master.expect("a master");
        assert_eq!(master.host, "127.0.0.1");
        assert_eq!(master.port, derived_port("openmpi:777"));
        assert!((20_000..30_000).contains(&master.port));
        assert!(l.master_source.contains("every rank is on this node"));
    }

    #[test]
    fn multi_node_mpi_without_address_is_an_error() {
        let e = error(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "16"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "8"),
        ]);
        assert_eq!(e.variable(), "MASTER_ADDR");
        assert!(e.to_string().contains("set MASTER_ADDR"), "{e}");
        // Unknown local size: cannot assume one node either.
        let e = error(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")]);
        assert_eq!(e.variable(), "MASTER_ADDR");
    }

    #[test]
    fn partial_launcher_variables_are_errors() {
        let cases = [
            (vec![("OMPI_COMM_WORLD_RANK", "1")], "OMPI_COMM_WORLD_SIZE"),
            (vec![("OMPI_COMM_WORLD_SIZE", "4")], "OMPI_COMM_WORLD_RANK"),
            (vec![("PMI_RANK", "1")], "PMI_SIZE"),
            (vec![("PMI_SIZE", "4")], "PMI_RANK"),
        ];
        for (pairs, var) in cases {
            let e = error(&pairs);
            assert_eq!(e.variable(), var, "{pairs:?}");
            assert!(e.to_string().ends_with("is not."), "{e}");
        }
    }

    #[test]
    fn pmi_variables() {
        let l = launch(&with_addr(&[
            ("PMI_RANK", "2"),
            ("PMI_SIZE", "4"),
            ("MPI_LOCALRANKID", "0"),
            ("MPI_LOCALNRANKS", "2"),
        ]));
        assert_eq!(l.launcher, Launcher::Pmi);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.local_world_size),
            (2, 4, Some(0), Some(2))
        );
        assert_eq!(l.job_token, "pmi@node0:29600/4");
        // Hydra inside an allocation: the step variables are the proxy's, not ours.
        let l = launch(&with_addr(&[
            ("PMI_RANK", "5"),
            ("PMI_SIZE", "8"),
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_ID", "3"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_ID", "10"),
        ]));
        assert_eq!(l.launcher, Launcher::Pmi);
        assert_eq!(l.rank, 5);
    }

    #[test]
    fn srun_with_pmi2_is_reported_as_slurm() {
        let l = launch(&[
            ("PMI_RANK", "3"),
            ("PMI_SIZE", "8"),
            ("SLURM_PROCID", "3"),
            ("SLURM_STEP_ID", "1"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "3"),
            ("SLURM_NODEID", "0"),
            ("SLURM_TASKS_PER_NODE", "4(x2)"),
            ("SLURM_JOB_ID", "4321"),
            ("SLURM_STEP_NODELIST", "gpu[01-02]"),
        ]);
        assert_eq!(l.launcher, Launcher::Slurm);
        assert_eq!(l.job_token, "slurm:4321.1");
        assert_eq!(l.master.map(|m| m.host), Some("gpu01".to_string()));
    }

    fn srun(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = vec![
            ("SLURM_JOB_ID", "4321"),
            ("SLURM_STEP_ID", "2"),
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "1"),
            ("SLURM_TASKS_PER_NODE", "4(x2)"),
            ("SLURM_STEP_NODELIST", "dgx[07-08]"),
        ];
        for &(k, val) in extra {
            v.retain(|(key, _)| *key != k);
            v.push((k, val));
        }
        v
    }

    #[test]
    fn slurm_step_variables() {
        let l = launch(&srun(&[]));
        assert_eq!(l.launcher, Launcher::Slurm);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.local_world_size),
            (5, 8, Some(1), Some(4))
        );
        assert_eq!(l.job_token, "slurm:4321.2");
        assert_eq!(l.token_source, "SLURM_JOB_ID.SLURM_STEP_ID");
        let master = l.master.expect("master");
        assert_eq!(master.host, "dgx07");
        assert_eq!(master.port, derived_port("slurm:4321.2"));
        assert!(
            l.master_source
                .contains("first host of SLURM_STEP_NODELIST"),
            "{}",
            l.master_source
        );
        assert!(
            l.master_source
                .contains("derived from SLURM_JOB_ID.SLURM_STEP_ID"),
            "{}",
            l.master_source
        );
    }

    #[test]
    fn slurm_step_prefers_the_step_task_count_and_old_names_work() {
        let l = launch(&srun(&[
            ("SLURM_STEP_NUM_TASKS", "6"),
            ("SLURM_STEP_TASKS_PER_NODE", "3(x2)"),
        ]));
        assert_eq!((l.world_size, l.local_world_size), (6, Some(3)));

        let l = launch(&[
            ("SLURM_JOBID", "77"),
            ("SLURM_STEPID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NPROCS", "1"),
        ]);
        assert_eq!((l.launcher, l.world_size), (Launcher::Slurm, 1));
        assert_eq!(l.job_token, "slurm:77.0");
        assert_eq!(l.master, None);
    }

    #[test]
    fn slurm_local_size_from_each_source() {
        // Uneven distribution, indexed by node.
        let l = launch(&srun(&[
            ("SLURM_TASKS_PER_NODE", "5,3"),
            ("SLURM_LOCALID", "2"),
        ]));
        assert_eq!(l.local_world_size, Some(3));
        // No node id, uneven: unknown.
        let mut v = srun(&[("SLURM_TASKS_PER_NODE", "5,3")]);
        v.retain(|(k, _)| *k != "SLURM_NODEID");
        assert_eq!(launch(&v).local_world_size, None);
        // No node id, uniform: known.
        let mut v = srun(&[]);
        v.retain(|(k, _)| *k != "SLURM_NODEID");
        assert_eq!(launch(&v).local_world_size, Some(4));
        // Only --ntasks-per-node.
        let mut v = srun(&[("SLURM_NTASKS_PER_NODE", "4")]);
        v.retain(|(k, _)| *k != "SLURM_TASKS_PER_NODE");
        assert_eq!(launch(&v).local_world_size, Some(4));
    }

    #[test]
    fn slurm_malformed_values_name_the_variable() {
        let e = error(&srun(&[("SLURM_TASKS_PER_NODE", "4(y2)")]));
        assert_eq!(e.variable(), "SLURM_TASKS_PER_NODE");
        assert!(e.to_string().contains("'4(y2)'"), "{e}");

        let e = error(&srun(&[("SLURM_NODEID", "5")]));
        assert_eq!(e.variable(), "SLURM_NODEID");

        let e = error(&srun(&[("SLURM_PROCID", "8")]));
        assert_eq!(e.variable(), "SLURM_PROCID");
        assert_eq!(
            e.to_string(),
            "SLURM_PROCID=8 is not below the world size SLURM_NTASKS=8."
        );

        let mut v = srun(&[]);
        v.retain(|(k, _)| *k != "SLURM_NTASKS");
        let e = error(&v);
        assert_eq!(e.variable(), "SLURM_NTASKS");
    }

    #[test]
    fn slurm_host_list_forms() {
        let l = launch(&srun(&[("SLURM_STEP_NODELIST", "node17")]));
        assert_eq!(l.master.map(|m| m.host).as_deref(), Some("node17"));
        let mut v = srun(&[("SLURM_JOB_NODELIST", "a[3,5-7],b1")]);
        v.retain(|(k, _)| *k != "SLURM_STEP_NODELIST");
        assert_eq!(launch(&v).master.map(|m| m.host).as_deref(), Some("a3"));

        let e = error(&srun(&[("SLURM_STEP_NODELIST", "rack[1-2]-node[1-4]")]));
        assert_eq!(e.variable(), "SLURM_STEP_NODELIST");
        assert!(e.to_string().contains("set MASTER_ADDR"), "{e}");

        // Without any host list there is nothing to guess from.
        let mut v = srun(&[]);
        v.retain(|(k, _)| *k != "SLURM_STEP_NODELIST");
        assert_eq!(error(&v).variable(), "MASTER_ADDR");

        // MASTER_ADDR beats the host list.
        let l = launch(&srun(&[("MASTER_ADDR", "login7"), ("MASTER_PORT", "4000")]));
        assert_eq!(l.master, Some(Endpoint::new("login7", 4000)));
    }

    #[test]
    fn slurm_rank_zero_checks_it_runs_on_the_first_host() {
        let ok = srun(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODEID", "0"),
            ("SLURMD_NODENAME", "dgx07"),
        ]);
        assert_eq!(launch(&ok).rank, 0);
        let bad = srun(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODEID", "0"),
            ("SLURMD_NODENAME", "dgx08"),
        ]);
        let e = error(&bad);
        assert_eq!(e.variable(), "SLURM_STEP_NODELIST");
        assert!(
            e.to_string()
                .starts_with("rank 0 runs on dgx08 but the first host"),
            "{e}"
        );
        // Other ranks do not check (they are not where rank 0 is).
        let other = srun(&[("SLURMD_NODENAME", "dgx08")]);
        assert_eq!(launch(&other).rank, 5);
    }

    #[test]
    fn slurm_single_node_uses_loopback() {
        let l = launch(&srun(&[
            ("SLURM_NTASKS", "4"),
            ("SLURM_TASKS_PER_NODE", "4"),
            ("SLURM_PROCID", "2"),
            ("SLURM_NODEID", "0"),
        ]));
        assert_eq!(l.master.map(|m| m.host).as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn pmix_daemon_step_is_not_ours() {
        // prterun in an allocation: the daemon's srun step says rank 1 of 2, PMIx says 9.
        let e = error(&[
            ("PMIX_RANK", "9"),
            ("PMIX_NAMESPACE", "prterun-x-1@1"),
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "2"),
        ]);
        assert_eq!(e.variable(), "SOLBENCH_WORLD_SIZE");
        assert!(
            e.to_string()
                .contains("PMIX_RANK is set but PMIx puts no world size"),
            "{e}"
        );

        let l = launch(&with_addr(&[
            ("PMIX_RANK", "9"),
            ("PMIX_NAMESPACE", "prterun-x-1@1"),
            ("SOLBENCH_WORLD_SIZE", "16"),
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "2"),
        ]));
        assert_eq!((l.launcher, l.rank, l.world_size), (Launcher::Pmix, 9, 16));
        assert_eq!(l.job_token, "pmix:prterun-x-1@1");
    }

    #[test]
    fn srun_with_pmix_is_slurm() {
        let l = launch(&srun(&[
            ("PMIX_RANK", "5"),
            ("PMIX_NAMESPACE", "slurm.pmix.4321.2"),
        ]));
        assert_eq!((l.launcher, l.rank), (Launcher::Slurm, 5));
        assert_eq!(l.job_token, "slurm:4321.2");
    }

    #[test]
    fn solbench_world_size_and_local_rank_fill_or_confirm() {
        // Fills PMI's missing local rank.
        let l = launch(&with_addr(&[
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("SOLBENCH_LOCAL_RANK", "1"),
        ]));
        assert_eq!(l.local_rank, Some(1));
        // Agrees: fine.
        let l = launch(&with_addr(&[
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("SOLBENCH_WORLD_SIZE", "2"),
        ]));
        assert_eq!(l.world_size, 2);
        // Disagrees: an error naming both.
        let e = error(&with_addr(&[
            ("PMI_RANK", "1"),
            ("PMI_SIZE", "2"),
            ("SOLBENCH_WORLD_SIZE", "4"),
        ]));
        assert_eq!(e.variable(), "SOLBENCH_WORLD_SIZE");
        assert_eq!(
            e.to_string(),
            "SOLBENCH_WORLD_SIZE=4 disagrees with PMI_SIZE=2."
        );
        let e = error(&with_addr(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("SOLBENCH_LOCAL_RANK", "0"),
        ]));
        assert_eq!(e.variable(), "SOLBENCH_LOCAL_RANK");
    }

    #[test]
    fn inconsistent_numbers_are_one_sentence_naming_the_variable() {
        // (variables, the variable named, the sentence)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("OMPI_COMM_WORLD_RANK", "4"), ("OMPI_COMM_WORLD_SIZE", "4")],
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_RANK=4 is not below the world size OMPI_COMM_WORLD_SIZE=4.",
            ),
            (
                vec![("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "0")],
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_SIZE=0: a job has at least one process.",
            ),
            (
                vec![("RANK", "one"), ("WORLD_SIZE", "2")],
                "RANK",
                "RANK='one' is not a non-negative integer.",
            ),
            (
                vec![("RANK", "-1"), ("WORLD_SIZE", "2")],
                "RANK",
                "RANK='-1' is not a non-negative integer.",
            ),
            (
                vec![("PMI_RANK", "0"), ("PMI_SIZE", "2.5")],
                "PMI_SIZE",
                "PMI_SIZE='2.5' is not a non-negative integer.",
            ),
            (
                vec![("SOLBENCH_RANK", "0"), ("SOLBENCH_WORLD_SIZE", "99999999999999999999999")],
                "SOLBENCH_WORLD_SIZE",
                "SOLBENCH_WORLD_SIZE='99999999999999999999999' is too large to be a rank or a count.",
            ),
            (
                vec![("SOLBENCH_RANK", "0"), ("SOLBENCH_WORLD_SIZE", "2000000")],
                "SOLBENCH_WORLD_SIZE",
                "SOLBENCH_WORLD_SIZE=2000000 is larger than the 1048576 processes solbench supports.",
            ),
            (
                vec![("RANK", "0"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "2"), ("LOCAL_WORLD_SIZE", "2")],
                "LOCAL_RANK",
                "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2.",
            ),
            (
                vec![("RANK", "0"), ("WORLD_SIZE", "4"), ("LOCAL_WORLD_SIZE", "8")],
                "LOCAL_WORLD_SIZE",
                "LOCAL_WORLD_SIZE=8 is larger than the world size WORLD_SIZE=4.",
            ),
            (
                vec![("RANK", "0"), ("WORLD_SIZE", "4"), ("LOCAL_WORLD_SIZE", "0")],
                "LOCAL_WORLD_SIZE",
                "LOCAL_WORLD_SIZE=0: a node running this process has at least one.",
            ),
            (
                vec![("RANK", "0"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "4")],
                "LOCAL_RANK",
                "LOCAL_RANK=4 is not below the world size WORLD_SIZE=4.",
            ),
        ];
        for (mut pairs, var, sentence) in cases {
            pairs.extend_from_slice(&ADDR);
            let e = error(&pairs);
            assert_eq!(e.variable(), var, "{pairs:?}");
            assert_eq!(e.to_string(), sentence, "{pairs:?}");
        }
    }

    #[test]
    fn addresses_ports_and_tokens_are_validated() {
        let base = [
            ("SOLBENCH_RANK", "0"),
            ("SOLBENCH_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
        ];
        for (var, value) in [
            ("MASTER_PORT", "0"),
            ("MASTER_PORT", "70000"),
            ("MASTER_PORT", "http"),
            ("SOLBENCH_MASTER_PORT", "+80"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((var, value));
            let e = error(&pairs);
            assert_eq!(e.variable(), var);
            assert!(
                e.to_string().ends_with("is not a TCP port (1-65535)."),
                "{e}"
            );
        }
        let e = error(&[
            ("SOLBENCH_RANK", "0"),
            ("SOLBENCH_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a b"),
        ]);
        assert_eq!(e.variable(), "MASTER_ADDR");

        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        let mut pairs = base.to_vec();
        pairs.push(("SOLBENCH_JOB_TOKEN", &long));
        assert_eq!(error(&pairs).variable(), "SOLBENCH_JOB_TOKEN");
        let mut pairs = base.to_vec();
        pairs.push(("SOLBENCH_JOB_TOKEN", "a\u{7}b"));
        assert_eq!(error(&pairs).variable(), "SOLBENCH_JOB_TOKEN");
    }

    #[test]
    fn explicit_address_and_token_win() {
        let l = launch(&srun(&[
            ("MASTER_ADDR", "ignored"),
            ("MASTER_PORT", "1111"),
            ("SOLBENCH_MASTER_ADDR", "[fd00::1]"),
            ("SOLBENCH_MASTER_PORT", "2222"),
            ("SOLBENCH_JOB_TOKEN", "nightly-7"),
        ]));
        assert_eq!(l.master, Some(Endpoint::new("fd00::1", 2222)));
        assert_eq!(
            l.master.as_ref().map(|m| m.to_string()).as_deref(),
            Some("[fd00::1]:2222")
        );
        assert_eq!(l.job_token, "nightly-7");
        assert_eq!(l.token_source, "SOLBENCH_JOB_TOKEN");
    }

    #[test]
    fn empty_values_count_as_unset_and_values_are_trimmed() {
        let l = launch(&[
            ("SOLBENCH_RANK", " 1 "),
            ("SOLBENCH_WORLD_SIZE", "2\n"),
            ("SOLBENCH_MASTER_ADDR", ""),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "7000"),
            ("SOLBENCH_JOB_TOKEN", ""),
        ]);
        assert_eq!((l.rank, l.world_size), (1, 2));
        assert_eq!(l.master, Some(Endpoint::new("h", 7000)));
        assert_eq!(l.job_token, "explicit@h:7000/2");
    }

    #[test]
    fn default_port_without_identity() {
        let l = launch(&[
            ("SOLBENCH_RANK", "0"),
            ("SOLBENCH_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
        ]);
        assert_eq!(l.master, Some(Endpoint::new("h", DEFAULT_PORT)));
    }

    #[test]
    fn long_identities_are_hashed_into_a_token() {
        let ns = "n".repeat(400);
        let l = launch(&with_addr(&[
            ("PMIX_RANK", "0"),
            ("PMIX_NAMESPACE", &ns),
            ("SOLBENCH_WORLD_SIZE", "2"),
        ]));
        assert!(
            l.job_token.starts_with("pmix:") && l.job_token.len() == 5 + 16,
            "{}",
            l.job_token
        );
    }

    #[test]
    fn derived_ports_are_stable_and_in_range() {
        // Pinned: every rank of every build must compute the same port.
        assert_eq!(derived_port("slurm:4321.2"), derived_port("slurm:4321.2"));
        assert_ne!(derived_port("slurm:4321.2"), derived_port("slurm:4321.3"));
        for id in ["", "a", "slurm:1.0", "openmpi:99"] {
            assert!((20_000..30_000).contains(&derived_port(id)));
        }
        assert_eq!(fnv64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn timeouts_from_variables() {
        assert_eq!(Timeouts::from_lookup(env(&[])), Ok(Timeouts::default()));
        let t = Timeouts::from_lookup(env(&[(JOIN_TIMEOUT_VAR, "2.5"), (OP_TIMEOUT_VAR, "30")]))
            .unwrap();
        assert_eq!(t.join, Duration::from_millis(2500));
        assert_eq!(t.op, Duration::from_secs(30));
        for bad in ["0", "-1", "soon", "inf", "NaN", "1e9"] {
            let e = Timeouts::from_lookup(env(&[(JOIN_TIMEOUT_VAR, bad)])).unwrap_err();
            assert_eq!(e.variable(), JOIN_TIMEOUT_VAR, "{bad}");
        }
    }

    #[test]
    fn describe_is_one_line() {
        let l = launch(&srun(&[]));
        let d = l.describe();
        assert!(
            d.starts_with("rank 5 of 8 (local 1 of 4), started by Slurm; rendezvous at dgx07:"),
            "{d}"
        );
        assert!(!d.contains('\n'));
    }
}
