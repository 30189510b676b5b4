#!/bin/bash
# Where a decode step's (or, with PP=N, a prefill's) time goes on the GPU, kernel by kernel: ncu
# times every kernel of a few decode steps (CUDA graphs off so each launch is seen; --clock-control
# none leaves the clocks alone), and the table sums them by kernel name, largest first. ncu runs
# kernels one at a time with a cache flush before each, so the sum overstates a replayed step (0.75x
# of it, measured on 2026-12-02): compare shares, not totals. Usage, on the device: bash docs/bench/profile-decode.sh MINFER MODEL.gguf [depth]
# [kernel-regex]: with a regex, ncu times only the kernels it matches (the others run unprofiled), so a
# deep fill, whose thousands of kernels ncu would otherwise serialize one by one, costs little.
set -euo pipefail
# PP=N (environment): profile one prefill of N tokens instead (runs of `-p N -n 0 -r 1` and `-r 2`,
# whose difference is one measured prefill pass).
minfer=$1 model=$2 depth=${3:-0} only=${4:-.}
out=${OUT:-/tmp}
# Two runs, 2 and 4 decode tokens after the same fill (bench -r 1: a warm-up pass and one measured): their difference in
# kernel count is four decode steps (two passes of two more tokens), and the last that many kernels of
# the longer run are four consecutive decode steps.
for n in 2 4; do
    if [ -n "${PP:-}" ]; then run=(-p "$PP" -n 0 -r $((n / 2))); else run=(-p 0 -n $n -r 1); fi
    MINFER_CUDA_GRAPHS=0 ncu --clock-control none -k "regex:$only" --csv --page raw --metrics gpu__time_duration.sum \
        "$minfer" bench -m "$model" "${run[@]}" --depth "$depth" > "$out/ncu-decode-$n.csv" 2>/dev/null || true
done
what=$([ -n "${PP:-}" ] && echo "one prefill of $PP" || echo "4 decode steps")
python3 - "$out/ncu-decode-2.csv" "$out/ncu-decode-4.csv" "$what" <<'PY'
import csv, sys, collections
def kernels(path):
    rows = [r for r in csv.reader(open(path)) if len(r) > 5]
    head = rows[0]
    name_i, t_i = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    return [(r[name_i].replace("void ", "").replace("unnamed>::", "").split("(")[0].split("<")[0], float(r[t_i].replace(",", "")))  # ncu prints 7,968
            for r in rows[2:]]  # skip header, units
short, long_ = kernels(sys.argv[1]), kernels(sys.argv[2])
step = long_[len(short):]  # four consecutive decode steps, or one prefill pass
agg = collections.defaultdict(lambda: [0, 0.0])
for k, t in step:
    agg[k][0] += 1
    agg[k][1] += t
total = sum(v[1] for v in agg.values())
print(f"| kernel | launches ({sys.argv[3]}) | us | share |\n| --- | ---: | ---: | ---: |")
for k, (c, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"| {k} | {c} | {t / 1000:.1f} | {100 * t / total:.1f}% |")
print(f"| total | {len(step)} | {total / 1000:.1f} | |")
PY
