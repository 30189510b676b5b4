#!/bin/bash
# Fourteenth session, last call: where a V2-Lite decode step's kernels stand after mla-diet and
# id-diet. ncu, one launch each at depth 0 (CUDA graphs off, clocks left alone): duration,
# instructions, cycles a warp is active, and the stall reasons of an issued instruction, for the
# kernels a MoE layer runs. Compare s13j (the MUL_MAT_IDs before id-diet: 12.1 and 12.5 us) and s14b
# (the MLA kernel: 8.6 us). No prediction: a measurement for the next session.
# Binary: .carry/main (main f2927f1: 1437b92, renames, qrope off).
# Carry: build-deps, .carry/main
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_pack .carry/main
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
for k in matvec_q_id_kernel matvec_q_id_weighted_kernel matvec_q_kernel flash_attn_mla quantize_act_rms_norm \
         quantize_act_swiglu top_k matvec_f32_split set_rows rope_kernel; do
    MINFER_CUDA_GRAPHS=0 timeout 60 ncu --clock-control none -k regex:$k -s 60 -c 1 --csv --page raw \
        --metrics gpu__time_duration.sum,smsp__inst_executed.sum,smsp__cycles_active.max,launch__grid_size,launch__block_size,launch__registers_per_thread,regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
        $B bench -m /root/v2l.gguf -p 0 -n 4 -r 1 > $OUT/ncu-$k.csv 2>&1
    python3 - $OUT/ncu-$k.csv $k <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
if len(rows) < 3: print(sys.argv[2], "| no data"); sys.exit()
head, vals = rows[0], rows[2]
name = vals[head.index("Kernel Name")][:60]
out, stalls = [], []
for k, v in zip(head, vals):
    if "stalled" in k:
        f = float(v.replace(",", "") or 0)
        if f >= 0.3: stalls.append((f, k.split("stalled_")[1].split("_per")[0]))
    elif k.startswith(("gpu__time_duration.sum", "smsp__inst_executed.sum", "smsp__cycles_active.max", "launch__")):
        out.append(f"{k.split('__')[1]} {v}")
stalls.sort(reverse=True)
print(f"{sys.argv[2]} | {name} | " + " | ".join(out) + " | " + ", ".join(f"{n} {f:.2f}" for f, n in stalls[:5]))
PY
done
echo "total $SECONDS s"
