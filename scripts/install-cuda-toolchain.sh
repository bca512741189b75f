#!/usr/bin/env bash
# Install the CUDA 13 compiler toolchain (nvcc, ptxas, NVVM, NVRTC, headers, cuobjdump,
# nvdisasm), cuBLAS(Lt) and NCCL from PyPI wheels into $REPO/.toolchains/cuda (a Python venv, git-ignored).
# No GPU, driver or system CUDA install is needed; this is what CI and scripts/check-kernels.sh use.
#
# Usage:
#   eval "$(scripts/install-cuda-toolchain.sh)"     # install if needed, then export the paths
#   scripts/install-cuda-toolchain.sh --force        # recreate the venv from scratch
#
# stdout carries only `export ...` lines (safe to eval); progress and the installed versions go
# to stderr. Running it again is cheap: an existing venv with the pinned wheels is reused.
#
# Environment:
#   SOLBENCH_CUDA_VENV     venv location (default: $REPO/.toolchains/cuda)
#   SOLBENCH_CUDA_UNPINNED=1  install the newest 13.x wheels (NCCL: newest 2.x) instead of the pins below
#   PYTHON                 interpreter used to create the venv (default: python3)
#
# Layout of the wheels (CUDA 13): everything lands in <site-packages>/nvidia/cu13, which is a
# CUDA_HOME-like root: bin/ (nvcc, ptxas, nvcc.profile, cuobjdump, nvdisasm), nvvm/bin/cicc,
# nvvm/libdevice, include/ (cuda_bf16.h, cuda_fp8.h, ...; include/cccl for CCCL) and
# lib/ (libnvrtc.so.13, libnvrtc-builtins.so.13.x, libcudart.so.13, libnvvm.so.4).
# nvcc finds cicc/libdevice/include through bin/nvcc.profile relative to itself, so exporting
# PATH is enough for nvcc; NVRTC needs include/ passed with --include-path (or
# --use-bundled-headers), and libnvrtc must be on LD_LIBRARY_PATH for dlopen.
# NCCL (nvidia-nccl-cu13) lands outside that root, in <site-packages>/nvidia/nccl: lib/libnccl.so.2
# (the only name it ships; it links the CUDA runtime statically and needs no GPU to load) and
# include/nccl.h. solbench dlopens libnccl.so.2, so that lib/ goes on LD_LIBRARY_PATH too.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SOLBENCH_CUDA_VENV:-$REPO/.toolchains/cuda}"
PYTHON="${PYTHON:-python3}"

# Pinned to the newest 13.x wheels on PyPI when this script was written (CUDA 13.5). nvidia-cuda-cccl is versioned
# separately by NVIDIA (CCCL 3.3.x shipped as 13.3.5.x); nvidia-nccl-cu13 carries NCCL's own version (2.x).
PINNED=(
  nvidia-cuda-nvcc==13.5.37
  nvidia-cuda-crt==13.5.37
  nvidia-nvvm==13.5.37
  nvidia-cuda-cccl==13.3.5.0.6
  nvidia-cuda-runtime==13.5.37
  nvidia-cuda-nvrtc==13.5.37
  nvidia-cuda-cuobjdump==13.5.37
  nvidia-cuda-nvdisasm==13.5.37
  nvidia-cublas==13.10.0.20
  nvidia-nccl-cu13==2.32.3
)
UNPINNED=(
  'nvidia-cuda-nvcc>=13,<14' 'nvidia-cuda-crt>=13,<14' 'nvidia-nvvm>=13,<14'
  'nvidia-cuda-cccl>=13,<14' 'nvidia-cuda-runtime>=13,<14' 'nvidia-cuda-nvrtc>=13,<14'
  'nvidia-cuda-cuobjdump>=13,<14' 'nvidia-cuda-nvdisasm>=13,<14' 'nvidia-cublas>=13,<14'
  'nvidia-nccl-cu13>=2,<3'
)

log() { printf '%s\n' "$*" >&2; }
die() { printf 'install-cuda-toolchain: %s\n' "$*" >&2; exit 1; }

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$arg' (expected --force or --help)." ;;
  esac
done

if [[ "${SOLBENCH_CUDA_UNPINNED:-0}" == 1 ]]; then WANT=("${UNPINNED[@]}"); else WANT=("${PINNED[@]}"); fi

# The CUDA root inside the venv, or empty if the venv has no python yet.
cuda_root() {
  [[ -x "$VENV/bin/python" ]] || return 0
  local sp
  sp="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)" || return 0
  [[ -d "$sp/nvidia/cu13" ]] && printf '%s\n' "$sp/nvidia/cu13"
  return 0
}

# NCCL's lib directory inside the venv, or empty if the venv has no python yet.
nccl_lib() {
  [[ -x "$VENV/bin/python" ]] || return 0
  local sp
  sp="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)" || return 0
  [[ -d "$sp/nvidia/nccl/lib" ]] && printf '%s\n' "$sp/nvidia/nccl/lib"
  return 0
}

# True when the venv already holds exactly the wanted pins (or any version in each range's
# lower major when unpinned: 13.x for CUDA, 2.x for NCCL).
up_to_date() {
  [[ -x "$VENV/bin/pip" ]] || return 1
  local frozen
  frozen="$("$VENV/bin/pip" freeze 2>/dev/null)" || return 1
  if [[ "${SOLBENCH_CUDA_UNPINNED:-0}" == 1 ]]; then
    local name major
    for spec in "${UNPINNED[@]}"; do
      name="${spec%%>=*}"
      major="${spec#*>=}"; major="${major%%,*}"
      grep -qi "^${name}==${major}\." <<<"$frozen" || return 1
    done
  else
    for spec in "${PINNED[@]}"; do
      grep -qix "$spec" <<<"$frozen" || return 1
    done
  fi
  local root; root="$(cuda_root)"
  local nccl; nccl="$(nccl_lib)"
  [[ -n "$root" && -x "$root/bin/nvcc" && -x "$root/bin/ptxas" && -n "$nccl" && -f "$nccl/libnccl.so.2" ]]
}

start=$SECONDS
if [[ $FORCE == 1 && -d "$VENV" ]]; then
  log "removing $VENV (--force)"
  rm -rf "$VENV"
fi

if up_to_date; then
  log "CUDA toolchain already installed in $VENV"
else
  command -v "$PYTHON" >/dev/null 2>&1 \
    || die "'$PYTHON' was not found; install Python 3.9+ with the venv module (Debian/Ubuntu: apt-get install python3 python3-venv)."
  "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || die "'$PYTHON' lacks the venv/ensurepip modules, so no venv with pip can be created; install them (Debian/Ubuntu: apt-get install python3-venv)."
  if [[ ! -x "$VENV/bin/pip" ]]; then
    log "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' failed; check that python3-venv is installed and the directory is writable."
  fi
  [[ -x "$VENV/bin/pip" ]] || die "the venv at $VENV has no pip; delete it and install python3-venv, or rerun with --force."
  log "installing: ${WANT[*]}"
  "$VENV/bin/pip" install --disable-pip-version-check -q "${WANT[@]}" >&2 \
    || die "pip could not install the CUDA wheels (see the pip output above; network access to PyPI is needed)."
fi

ROOT="$(cuda_root)"
[[ -n "$ROOT" ]] || die "the wheels installed but $VENV has no nvidia/cu13 directory; the wheel layout changed, so update this script."
for tool in nvcc ptxas; do
  [[ -x "$ROOT/bin/$tool" ]] || die "$ROOT/bin/$tool is missing; rerun with --force."
done
[[ -f "$ROOT/include/cuda_bf16.h" ]] || die "$ROOT/include/cuda_bf16.h is missing (it comes from nvidia-cuda-runtime); rerun with --force."
ls "$ROOT"/lib/libnvrtc.so.* >/dev/null 2>&1 || die "libnvrtc.so.* is missing from $ROOT/lib (it comes from nvidia-cuda-nvrtc); rerun with --force."
ls "$ROOT"/lib/libcublasLt.so.* >/dev/null 2>&1 || die "libcublasLt.so.* is missing from $ROOT/lib (it comes from nvidia-cublas); rerun with --force."
NCCL_LIB="$(nccl_lib)"
[[ -n "$NCCL_LIB" && -f "$NCCL_LIB/libnccl.so.2" ]] || die "libnccl.so.2 is missing from $VENV's nvidia/nccl/lib (it comes from nvidia-nccl-cu13); rerun with --force."

"$ROOT/bin/nvcc" --version >/dev/null 2>&1 || die "$ROOT/bin/nvcc does not run: $("$ROOT/bin/nvcc" --version 2>&1 | tail -1)"
"$ROOT/bin/ptxas" --version >/dev/null 2>&1 || die "$ROOT/bin/ptxas does not run: $("$ROOT/bin/ptxas" --version 2>&1 | tail -1)"

log "installed wheels:"
"$VENV/bin/pip" freeze 2>/dev/null | grep -i '^nvidia-' | sed 's/^/  /' >&2
log "nvcc:  $("$ROOT/bin/nvcc" --version | tail -2 | head -1)"
log "ptxas: $("$ROOT/bin/ptxas" --version | tail -2 | head -1)"
log "NCCL:  $NCCL_LIB/libnccl.so.2"
log "CUDA root: $ROOT  (ready in $((SECONDS - start)) s)"

# The lines a caller evals. CUDA_HOME/CUDA_PATH point at the CUDA-like root so the Rust header
# discovery (CUDA_HOME/include) and cudarc's NVRTC dlopen (LD_LIBRARY_PATH) both find it;
# LD_LIBRARY_PATH also carries NCCL's lib directory for solbench-nccl's dlopen of libnccl.so.2.
q() { printf '%q' "$1"; }
printf 'export CUDA_HOME=%s\n' "$(q "$ROOT")"
printf 'export CUDA_PATH=%s\n' "$(q "$ROOT")"
printf 'export SOLBENCH_CUDA_INCLUDE=%s\n' "$(q "$ROOT/include")"
printf 'export PATH=%s:"$PATH"\n' "$(q "$ROOT/bin")"
printf 'export LD_LIBRARY_PATH=%s:%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n' "$(q "$ROOT/lib")" "$(q "$NCCL_LIB")"
