#!/bin/bash
# Fourteenth session: mla-diet. The MLA kernel's instructions a warp outside its mma work, from its SASS
# (cuobjdump, sm_90, 576/512, 8 warps): the queries' load ~1,714 (one scalar load a float, each
# behind two branches and a division by 576), a tile's copies ~486 (a division by 72 a 16-byte piece),
# the output ~400, against ~3,600 in all at depth 0 (s12i: ~4,350 measured by ncu). The new kernel
# loads the queries as float4s (~460, MINFER_CUDA_MLA_QX4=0 turns that part off), copies a tile a row
# a warp at constant offsets (~130) and stores the output as float2s (~145).
# Prediction (written before the run): the launch ~12 -> ~8 us (ncu), V2-Lite +5% at depth 0, +4% at
# 16k. Risk: s13a's 16-warp kernel, which halved every warp's instructions, gained nothing.
# Binaries: .carry/main (main 6894c57), .carry/qx4 (the change), pack_bins.
# Carry: build-deps, .carry/main, .carry/qx4
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_pack .carry/main /root/bins-main
unpack_pack .carry/qx4
M=/root/bins-main/minfer B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention test_gpu_deepseek2 test_gpu_attn_backends
MINFER_CUDA_MLA_QX4=0 TAG=scalarq run_suites test_gpu_attention
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(bench_rows $M -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | diet | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | diet qx4=0 | $(MINFER_CUDA_MLA_QX4=0 bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    for d in 4096 16384; do
        echo "v2l tg32 @ $d | main | $(T=90 bench_rows $M -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth $d)"
        echo "v2l tg32 @ $d | diet | $(T=90 bench_rows $B -m /root/v2l.gguf -p 0 -n 32 -r 2 --depth $d)"
    done
} 2>&1 | tee $OUT/s14b.log
for x in main:$M diet:$B; do
    MINFER_CUDA_GRAPHS=0 timeout 100 ncu --clock-control none -k regex:flash_attn_mla -s 20 -c 1 --csv --page raw \
        --metrics gpu__time_duration.sum,smsp__inst_executed.sum,smsp__cycles_active.avg,regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
        ${x#*:} bench -m /root/v2l.gguf -p 0 -n 4 -r 1 > $OUT/ncu-${x%%:*}.csv 2>&1
    python3 - $OUT/ncu-${x%%:*}.csv ${x%%:*} <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
head, vals = rows[0], rows[2]
out = []
for k, v in zip(head, vals):
    if "stalled" in k:
        f = float(v.replace(",", "") or 0)
        if f >= 0.2: out.append(f"{k.split('stalled_')[1].split('_per')[0]} {f:.2f}")
    elif k.startswith(("gpu__time", "smsp__inst", "smsp__cycles")):
        out.append(f"{k} {v}")
print(sys.argv[2], "|", " | ".join(out))
PY
done
echo "total $SECONDS s"
