//! Embeds specs/*.toml into the binary, so an installed `solbench` needs no source tree
//! (the CUDA kernels are embedded by crates/solbench-cuda), and records the git revision.

use std::fs;
use std::path::Path;
use std::process::Command;

fn embed(dir: &str, exts: &[&str], out: &mut String, name: &str) {
    let mut files: Vec<_> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p: &std::path::PathBuf| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e))
    });
    files.sort();
    out.push_str(&format!("pub static {name}: &[(&str, &str)] = &[\n"));
    for f in files {
        let abs = fs::canonicalize(&f).unwrap();
        let file = f.file_name().unwrap().to_string_lossy();
        out.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            file,
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    println!("cargo:rerun-if-changed={dir}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let mut code = String::new();
    embed("specs", &["toml"], &mut code, "SPECS");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    fs::write(out, code).unwrap();

    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=SOLBENCH_GIT_REV={rev}{}",
        if dirty { "-dirty" } else { "" }
    );
    // Rebuild when HEAD moves: HEAD names the branch, the branch ref names the commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    if let Ok(head) = fs::read_to_string(".git/HEAD") {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{r}");
        }
    }
}
