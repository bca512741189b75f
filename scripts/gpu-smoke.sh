#!/usr/bin/env bash
# The first thing to run on a machine with an NVIDIA GPU: checks the driver, makes NVRTC
# available, builds solbench, checks that the CUDA backend is usable, then runs a small GPU
# memory suite (HBM and L2 streaming, shared memory, copy engines, PCIe, peer) and prints
# the report. Compare the numbers with the expected ranges in docs/gpu.md.
#
# Usage: scripts/gpu-smoke.sh [--no-build] [--out DIR] [-- EXTRA SOLBENCH RUN ARGS]
#   --no-build  use the newest existing target/{release,debug}/solbench instead of building
#   --out DIR   where the result file goes (default: solbench-results/gpu-smoke)
#   -- ARGS     passed to `solbench run`, e.g. `-- --device 1` (default: --device 0)
# Exit code: solbench run's (0 nothing failed, 1 a FAIL/WRONG/ERROR, 2 bad input), or 1
# when a check before the run fails.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
BUILD=1
OUT="solbench-results/gpu-smoke"
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --out) [[ $# -ge 2 ]] || { echo "gpu-smoke: --out needs a directory" >&2; exit 2; }; OUT="$2"; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-smoke: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n== %s\n' "$*"; }
die() { printf 'gpu-smoke: %s\n' "$*" >&2; exit 1; }

step "1/6 NVIDIA driver"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi || die "nvidia-smi failed: the driver is not loaded or cannot talk to the GPU (check dmesg)."
  driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)" \
    || die "nvidia-smi could not report the driver version."
  echo "driver version: $driver"
  [[ "${driver%%.*}" =~ ^[0-9]+$ && "${driver%%.*}" -ge 570 ]] \
    || die "driver $driver is too old: solbench's CUDA 13 bindings need driver 570 or newer (CUDA 12.8+)."
else
  echo "warning: nvidia-smi not found; no NVIDIA driver seems to be installed (step 4 will say why CUDA is unavailable)."
fi

step "2/6 NVRTC (the run-time kernel compiler)"
nvrtc_loadable() {
  local dir
  local -a dirs=()
  IFS=: read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
  for dir in "${dirs[@]}" /lib /usr/lib /lib64 /usr/lib64; do
    [[ -n "$dir" && -e "$dir/libnvrtc.so.13" ]] && return 0
  done
  local ldc
  ldc="$(command -v ldconfig || echo /sbin/ldconfig)"
  [[ -x "$ldc" ]] && "$ldc" -p 2>/dev/null | grep -q 'libnvrtc\.so\.13 '
}
if nvrtc_loadable; then
  echo "libnvrtc.so.13 is loadable"
else
  echo "libnvrtc.so.13 is not on the library path: installing the CUDA 13 compiler wheels from PyPI"
  echo "(nvidia-cuda-nvrtc and friends) into .toolchains/cuda with scripts/install-cuda-toolchain.sh;"
  echo "it needs python3 with venv and network access to PyPI, and exports LD_LIBRARY_PATH and CUDA_HOME."
  env_lines="$(scripts/install-cuda-toolchain.sh)" \
    || die "the CUDA toolchain could not be installed (see above); install the CUDA 13 toolkit instead and put its lib64 on LD_LIBRARY_PATH."
  eval "$env_lines"
  nvrtc_loadable || die "libnvrtc.so.13 is still not on LD_LIBRARY_PATH after installing the toolchain."
fi

TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
step "3/6 build"
if [[ $BUILD == 1 ]]; then
  cargo build --release || die "cargo build --release failed (see above); a Rust toolchain 1.85 or newer is needed."
  BIN="$TARGET/release/solbench"
else
  BIN=""
  for b in "$TARGET/release/solbench" "$TARGET/debug/solbench"; do
    [[ -x "$b" && ( -z "$BIN" || "$b" -nt "$BIN" ) ]] && BIN="$b"
  done
  [[ -n "$BIN" ]] || die "--no-build: no solbench binary under $TARGET; run without --no-build."
fi
echo "using $BIN"

step "4/6 CUDA backend"
list="$("$BIN" list)" || die "solbench list failed (see above)."
cuda_line="$(grep -E '^ +cuda ' <<<"$list" || true)"
[[ -n "$cuda_line" ]] || die "$BIN has no CUDA backend; it is older than the CUDA support, so rebuild it (drop --no-build)."
echo "$cuda_line"
if ! [[ "$cuda_line" =~ ^\ +cuda\ +available\  ]]; then
  die "the CUDA backend is unavailable; the reason is on the line above (docs/gpu.md, 'If something is wrong', says what to do)."
fi
grep -E -A3 '^ +cuda:[0-9]+ ' <<<"$list" || true
gpus="$(grep -cE '^ +cuda:[0-9]+ ' <<<"$list" || true)"
echo "GPUs visible to CUDA: $gpus"

step "5/6 GPU memory suite"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
suite="$tmp/gpu-smoke.toml"
log="$tmp/run.log"
cat >"$suite" <<'EOF'
name = "gpu-smoke"
description = "HBM/L2 streaming, shared memory, copy engines, PCIe and peer copies, cuBLASLt GEMMs"

[settings]
warmup_ms = 20
min_time_ms = 100
min_samples = 5
max_samples = 500
target_sample_ms = 2.0
max_case_ms = 2000

# 16 MiB sits in L2 on A100/H100/H200/B200; 1 GiB and 4 GiB stream from HBM.
[[memory]]
ops = ["triad", "copy"]
sizes = ["16M", "1G", "4G"]

[[memory]]
ops = ["smem", "smem_sm"]

[[memory]]
ops = ["ce_copy", "h2d", "d2h", "bidir"]
sizes = ["512M"]

# cuBLASLt: a large square per type (FP8 and TF32 are SKIPPED where the GPU lacks them) and
# Llama-3-8B's layer GEMMs at a prefill token count.
[[gemm]]
dtypes = ["bf16", "fp8", "f16", "tf32"]
shapes = ["8192x8192x8192"]

[[gemm]]
dtypes = ["bf16"]
presets = ["llama-3-8b"]
tokens = [4096]
EOF
if [[ "$gpus" -ge 2 ]]; then
  # The planner expands peer to every other GPU.
  printf '\n[[memory]]\nops = ["peer"]\nsizes = ["512M"]\n' >>"$suite"
fi
run=("$BIN" run --backend cuda --suite "$suite" --out "$OUT")
[[ " ${EXTRA[*]-} " == *" --device"* ]] || run+=(--device 0)
run+=(${EXTRA[@]+"${EXTRA[@]}"})
echo "${run[*]}"
set +e
"${run[@]}" >"$log"
rc=$?
set -e

step "6/6 report"
result="$(sed -n 's/^Results: //p' "$log")"
if [[ -z "$result" ]]; then
  cat "$log"
  die "solbench run exited $rc without writing a result file (see the error above)."
fi
"$BIN" report "$result" || true
echo
echo "Result file: $result  (solbench report $result prints this again)"
echo "Compare the numbers with the expected ranges in docs/gpu.md. solbench run exited $rc."
exit "$rc"
