#!/bin/bash
# Where a replayed decode step's time goes, in place: nsys traces the CUDA graph node by node
# (--cuda-graph-trace=node), so each kernel's start and end are as they ran, overlapped launches
# and all (ncu, by contrast, runs kernels one at a time). The table gives per kernel name: launches a
# step, the mean time from the previous kernel's end to this one's end ("critical": what the kernel
# adds to the step when every kernel waits for the one before), and the mean duration from its own
# start. (The H200 machine had no nsys in s11c; kept for a machine that has it.) Usage, on the device: bash docs/bench/profile-nsys.sh MINFER MODEL.gguf [depth] [tokens]
set -euo pipefail
minfer=$1 model=$2 depth=${3:-0} n=${4:-32}
out=${OUT:-/tmp}
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1 || true)
[ -n "$nsys" ] || { echo "no nsys on this machine"; exit 1; }
"$nsys" profile --cuda-graph-trace=node --trace=cuda -o "$out/decode" -f true \
    "$minfer" bench -m "$model" -p 0 -n "$n" -r 1 --depth "$depth" > "$out/nsys-run.log" 2>&1
"$nsys" stats --report cuda_gpu_trace --format csv -o "$out/trace" "$out/decode.nsys-rep" > /dev/null 2>&1
python3 - "$out/trace_cuda_gpu_trace.csv" "$n" <<'PY'
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
if rows and "Start (ns)" not in rows[0]:
    sys.exit("unexpected columns: " + ", ".join(rows[0].keys()))
k = [r for r in rows if r.get("Name") and not r["Name"].startswith("[CUDA")]
start = [int(r["Start (ns)"]) for r in k]
dur = [int(r["Duration (ns)"]) for r in k]
name = [r["Name"].replace("void ", "").split("(")[0].split("<")[0].replace("mf::", "").replace("(anonymous namespace)::", "") for r in k]
# The last quarter of the kernels: steady decode steps (the fill and warm-up come first).
lo = len(k) * 3 // 4
agg = collections.defaultdict(lambda: [0, 0, 0])
for i in range(max(lo, 1), len(k)):
    end_prev = start[i - 1] + dur[i - 1]
    crit = start[i] + dur[i] - max(end_prev, start[i - 1])
    a = agg[name[i]]
    a[0] += 1; a[1] += max(crit, 0); a[2] += dur[i]
span = start[-1] + dur[-1] - start[lo]
total = sum(a[1] for a in agg.values())
print(f"kernels {len(k) - lo} over {span / 1000:.0f} us (critical sum {total / 1000:.0f} us)")
print("| kernel | launches | critical us (mean) | duration us (mean) | share of critical |")
print("| --- | ---: | ---: | ---: | ---: |")
for nm, (c, cr, d) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"| {nm} | {c} | {cr / c / 1000:.2f} | {d / c / 1000:.2f} | {100 * cr / total:.1f}% |")
PY
