#!/usr/bin/env bash
# Holds solbench's host triad against a C OpenMP STREAM-style triad built with
# gcc -O3 -march=native -fopenmp, on the same array sizes, bytes counted the same way
# (3 arrays x N x 8 bytes per iteration, read + written). Both run twice, interleaved,
# and the ratio of the medians of best rates and of median rates is printed.
#
# usage: scripts/stream-compare.sh [ELEMENTS_PER_ARRAY]   (default 2^26 = 512 MiB per array)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-67108864}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gcc -O3 -march=native -fopenmp scripts/stream_triad.c -o "$work/stream_triad"
cargo build --release --quiet
bytes=$((n * 8 * 3))
cat > "$work/suite.toml" <<TOML
name = "stream-compare"
[settings]
warmup_ms = 200
min_time_ms = 3000
min_samples = 30
max_samples = 50
target_sample_ms = 0.001
max_case_ms = 20000
[[memory]]
ops = ["triad"]
dtype = "f64"
sizes = ["$bytes"]
TOML

export OMP_PROC_BIND=close OMP_PLACES=cores
c_best=(); c_med=(); r_best=(); r_med=()
for round in 1 2; do
  read -r _ threads _ _ _ cb _ cm < <("$work/stream_triad" "$n" 50)
  c_best+=("$cb"); c_med+=("$cm")
  ./target/release/solbench run --backend host --suite "$work/suite.toml" --out "$work/out$round" >/dev/null 2>&1
  read -r rb rm < <(python3 - "$work/out$round" <<'PY'
import json, pathlib, sys
for f in pathlib.Path(sys.argv[1]).glob("*.jsonl"):
    for line in open(f):
        r = json.loads(line)
        if r["record"] == "case":
            m = r["measurement"]
            print(f'{m["best"]:.3f} {m["value"]:.3f}')
PY
)
  r_best+=("$rb"); r_med+=("$rm")
done
python3 - "$threads" "$n" "${c_best[*]}" "${c_med[*]}" "${r_best[*]}" "${r_med[*]}" <<'PY'
import statistics, sys
threads, n = sys.argv[1], int(sys.argv[2])
cb, cm, rb, rm = ([float(x) for x in a.split()] for a in sys.argv[3:7])
print(f"arrays: 3 x {n} doubles ({3*n*8/2**30:.2f} GiB), C threads: {threads}")
print(f"C OpenMP triad   best {statistics.median(cb):8.2f} GB/s  median {statistics.median(cm):8.2f} GB/s   runs best={cb} median={cm}")
print(f"solbench triad   best {statistics.median(rb):8.2f} GB/s  median {statistics.median(rm):8.2f} GB/s   runs best={rb} median={rm}")
print(f"ratio solbench/C best {statistics.median(rb)/statistics.median(cb):.3f}  median {statistics.median(rm)/statistics.median(cm):.3f}")
PY
