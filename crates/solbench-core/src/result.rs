//! The result file: JSON Lines, one record per line, schema-versioned.
//!
//! * line 1, `"record": "run"` — the environment and the devices;
//! * one `"record": "case"` line per case, appended and flushed **as each case
//!   finishes**, so an interrupted run keeps everything it measured;
//! * a last `"record": "end"` line when the run completes (its absence means the run
//!   was interrupted).
//!
//! Readers accept any file whose records carry `"schema": "solbench.result.v1"`.

use crate::backend::{Check, DeviceInfo, Notes, TelemetrySummary};
use crate::case::Case;
use crate::env::{HostEnvironment, SolbenchVersion};
use crate::stats::Stats;
use crate::verdict::Verdict;
use crate::work::{Headline, Work};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const SCHEMA: &str = "solbench.result.v1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub started_at: String,
    pub solbench: SolbenchVersion,
    pub host: HostEnvironment,
    pub backend: String,
    pub timing: String,
    pub devices: Vec<DeviceInfo>,
    /// Profile name or suite file the cases came from.
    pub suite: String,
    pub argv: Vec<String>,
    pub settings: crate::runner::RunSettings,
    pub planned_cases: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Verified and timed.
    Measured,
    /// The output did not match the oracle: no number.
    Wrong,
    /// The device cannot run the case.
    Skipped,
    /// An error stopped the case.
    Failed,
}

/// The timed result of a verified case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub headline: Headline,
    /// Headline value at the median time, in `unit`.
    pub value: f64,
    /// Headline value at the fastest sample (as STREAM's "best rate").
    pub best: f64,
    pub unit: String,
    pub stats: Stats,
    /// GB/s at the median time (bytes per the work's counting rule).
    pub gb_per_s: f64,
    /// TFLOP/s at the median time (0 when the case does no floating-point work).
    pub tflop_per_s: f64,
    /// Collectives: algorithm bandwidth (GB/s) at the median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algbw: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub run_id: String,
    pub index: usize,
    pub device: usize,
    pub case: Case,
    pub status: CaseStatus,
    pub started_at: String,
    pub finished_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<Work>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<Measurement>,
    /// Checks run: before timing, and again after timing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySummary>,
    #[serde(default, skip_serializing_if = "Notes::is_empty")]
    pub notes: Notes,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    pub run_id: String,
    pub finished_at: String,
    pub cases: usize,
    pub measured: usize,
    pub passed: usize,
    pub warned: usize,
    pub failed: usize,
    pub wrong: usize,
    pub skipped: usize,
    pub errors: usize,
    pub no_spec: usize,
    pub inconclusive: usize,
}

/// One line of a result file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Run(Box<RunRecord>),
    Case(Box<CaseRecord>),
    End(EndRecord),
}

#[derive(Serialize, Deserialize)]
struct Line<T> {
    schema: String,
    #[serde(flatten)]
    record: T,
}

impl Record {
    pub fn to_line(&self) -> String {
        let line = Line {
            schema: SCHEMA.to_string(),
            record: self,
        };
        serde_json::to_string(&line).expect("result records always serialise")
    }

    pub fn from_line(text: &str) -> Result<Record, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match value.get("schema").and_then(|s| s.as_str()) {
            Some(SCHEMA) => {}
            Some(other) => {
                return Err(format!(
                    "schema '{other}' is not one this solbench reads ({SCHEMA})"
                ))
            }
            None => return Err("no \"schema\" field: not a solbench result line".into()),
        }
        let line: Line<Record> =
            serde_json::from_value(value).map_err(|e| format!("malformed record: {e}"))?;
        Ok(line.record)
    }
}

/// Appends records to a result file, one `write` per line, flushed to the OS at once.
pub struct ResultWriter {
    path: PathBuf,
    file: File,
}

impl ResultWriter {
    pub fn create(path: &Path) -> Result<ResultWriter, String> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    format!("cannot create result directory {}: {e}", dir.display())
                })?;
            }
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot create result file {}: {e}", path.display()))?;
        Ok(ResultWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, record: &Record) -> Result<(), String> {
        let mut line = record.to_line();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| format!("cannot write to result file {}: {e}", self.path.display()))
    }
}

/// A parsed result file.
#[derive(Clone, Debug, Default)]
pub struct ResultFile {
    pub run: Option<RunRecord>,
    pub cases: Vec<CaseRecord>,
    pub end: Option<EndRecord>,
}

impl ResultFile {
    /// Parses a result file. A final line cut short by a crash is ignored with a note;
    /// any other bad line is an error naming its line number.
    pub fn parse(name: &str, text: &str) -> Result<(ResultFile, Vec<String>), String> {
        let mut out = ResultFile::default();
        let mut notes = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match Record::from_line(line) {
                Ok(Record::Run(r)) => out.run = Some(*r),
                Ok(Record::Case(c)) => out.cases.push(*c),
                Ok(Record::End(e)) => out.end = Some(e),
                Err(e) if i + 1 == lines.len() && !text.ends_with('\n') => {
                    notes.push(format!("{name}: the last line is incomplete (the run was cut off while writing it): {e}"));
                }
                Err(e) => return Err(format!("{name}: line {}: {e}", i + 1)),
            }
        }
        if out.run.is_none() {
            return Err(format!(
                "{name}: no run record; this is not a solbench result file"
            ));
        }
        if out.end.is_none() {
            notes.push(format!(
                "{name}: no end record, so the run was interrupted; {} finished cases are kept",
                out.cases.len()
            ));
        }
        Ok((out, notes))
    }

    pub fn read(path: &Path) -> Result<(ResultFile, Vec<String>), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read result file {}: {e}", path.display()))?;
        ResultFile::parse(&path.display().to_string(), &text)
    }
}
