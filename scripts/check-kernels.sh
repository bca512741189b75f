#!/usr/bin/env bash
# Compile every kernels/*.cu to CUBIN with nvcc for each target architecture and check ptxas's
# resource report: prints a table kernel x arch x registers x spills and exits non-zero if any
# file fails to compile or any kernel spills (spill stores/loads > 0, or a stack frame caused by
# spilling). Needs no GPU. Uses the PyPI toolchain from scripts/install-cuda-toolchain.sh
# (installed on first use) unless SOLBENCH_USE_SYSTEM_CUDA=1 and nvcc is on PATH.
#
# Usage: scripts/check-kernels.sh [ARCH...]      default archs: sm_80 sm_90a sm_100a
# Env:   NVCC_EXTRA_FLAGS  extra nvcc flags (e.g. -DSB_MEM_UNROLL=8)
#        KEEP_DIR          directory to keep the .cubin files in (default: a temp dir, removed)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARCHS=("$@")
[[ ${#ARCHS[@]} -gt 0 ]] || ARCHS=(sm_80 sm_90a sm_100a)
start=$SECONDS

if [[ "${SOLBENCH_USE_SYSTEM_CUDA:-0}" == 1 ]] && command -v nvcc >/dev/null 2>&1; then
  echo "using system nvcc: $(command -v nvcc)" >&2
else
  env_lines="$("$REPO/scripts/install-cuda-toolchain.sh")" \
    || { echo "check-kernels: the CUDA toolchain could not be installed (see above)." >&2; exit 1; }
  eval "$env_lines"
fi
command -v nvcc >/dev/null 2>&1 || { echo "check-kernels: nvcc is not on PATH." >&2; exit 1; }
echo "nvcc: $(nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*')" >&2

shopt -s nullglob
SOURCES=("$REPO"/kernels/*.cu)
[[ ${#SOURCES[@]} -gt 0 ]] || { echo "check-kernels: no kernels/*.cu files found." >&2; exit 1; }

if [[ -n "${KEEP_DIR:-}" ]]; then OUTDIR="$KEEP_DIR"; mkdir -p "$OUTDIR"
else OUTDIR="$(mktemp -d)"; trap 'rm -rf "$OUTDIR"' EXIT; fi

failures=0
rows=()          # "file|kernel|arch|regs|stack|spill_st|spill_ld|status"
for src in "${SOURCES[@]}"; do
  base="$(basename "$src" .cu)"
  for arch in "${ARCHS[@]}"; do
    out="$OUTDIR/$base.$arch.cubin"
    log="$OUTDIR/$base.$arch.log"
    # shellcheck disable=SC2086
    if ! nvcc -cubin -arch="$arch" -std=c++17 -O3 -I"$REPO/kernels" \
         --ptxas-options=-v -Werror all-warnings ${NVCC_EXTRA_FLAGS:-} \
         -o "$out" "$src" >"$log" 2>&1; then
      echo "FAIL: $base.cu does not compile for $arch:" >&2
      sed 's/^/    /' "$log" >&2
      failures=$((failures + 1))
      rows+=("$base.cu|-|$arch|-|-|-|-|COMPILE ERROR")
      continue
    fi
    # ptxas -v prints, per entry function:
    #   ptxas info    : Compiling entry function 'NAME' for 'sm_90a'
    #   ptxas info    : Function properties for NAME
    #       S bytes stack frame, X bytes spill stores, Y bytes spill loads
    #   ptxas info    : Used N registers, used B barriers, ... bytes smem, ... bytes cmem[0]
    parsed="$(awk -v file="$base.cu" -v arch="$arch" '
      /Compiling entry function/ {
        name = $0; sub(/.*entry function '\''/, "", name); sub(/'\''.*/, "", name)
        stack = "?"; st = "?"; ld = "?"; next }
      /bytes stack frame/ && name != "" {
        for (i = 1; i <= NF; i++) {
          if ($(i+1) == "bytes" && $(i+2) == "stack") stack = $i
          if ($(i+1) == "bytes" && $(i+2) == "spill" && $(i+3) ~ /^stores/) st = $i
          if ($(i+1) == "bytes" && $(i+2) == "spill" && $(i+3) ~ /^loads/)  ld = $i
        }
        next }
      /Used [0-9]+ registers/ && name != "" {
        regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
        printf "%s|%s|%s|%s|%s|%s|%s\n", file, name, arch, regs, stack, st, ld
        name = "" }
    ' "$log")"
    if [[ -z "$parsed" ]]; then
      echo "FAIL: no ptxas resource lines for $base.cu on $arch:" >&2
      sed 's/^/    /' "$log" >&2
      failures=$((failures + 1))
      continue
    fi
    while IFS='|' read -r f k a regs stack st ld; do
      status=ok
      if [[ "$st" != 0 || "$ld" != 0 ]]; then status=SPILL; failures=$((failures + 1)); fi
      rows+=("$f|$k|$a|$regs|$stack|$st|$ld|$status")
    done <<<"$parsed"
  done
done

printf '\n%-10s %-16s %-8s %5s %12s %12s %11s  %s\n' \
  file kernel arch regs stack_bytes spill_stores spill_loads status
printf '%s\n' "-------------------------------------------------------------------------------------------"
# Sort by file, kernel, then arch in the order given on the command line.
for row in "${rows[@]}"; do
  IFS='|' read -r f k a regs stack st ld status <<<"$row"
  order=0; for i in "${!ARCHS[@]}"; do [[ "${ARCHS[$i]}" == "$a" ]] && order=$i; done
  printf '%s|%s|%d|%s\n' "$f" "$k" "$order" "$row"
done | sort -t'|' -k1,1 -k2,2 -k3,3n | cut -d'|' -f4- | while IFS='|' read -r f k a regs stack st ld status; do
  printf '%-10s %-16s %-8s %5s %12s %12s %11s  %s\n' "$f" "$k" "$a" "$regs" "$stack" "$st" "$ld" "$status"
done

echo
if [[ $failures -gt 0 ]]; then
  echo "check-kernels: FAILED ($failures problem(s)); see above. ($((SECONDS - start)) s)" >&2
  exit 1
fi
echo "check-kernels: ${#SOURCES[@]} file(s) x ${#ARCHS[@]} arch(s) compiled, no spills. ($((SECONDS - start)) s)"
