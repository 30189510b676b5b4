#!/bin/bash
# Thirteenth session, last call: what paces the routed MUL_MAT_IDs (s13i: not their waves; s12b, s12f,
# s12j: not their round trips a warp nor their warps in flight). ncu's memory-workload and
# scheduler sections for one launch each of the routed gate_up and the weighted down, V2-Lite decode
# at depth 0, main 409f645 (CUDA graphs off so each launch is seen; clocks left alone).
# Carry: build-deps, .carry/s13j
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/s13j minfer
B=/root/bins/minfer
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
for k in matvec_q_id_kernel matvec_q_id_weighted_kernel; do
    MINFER_CUDA_GRAPHS=0 timeout 100 ncu --clock-control none -k "regex:$k" -s 200 -c 1 \
        --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section SchedulerStats \
        --section WarpStateStats --section SpeedOfLight \
        $B bench -m /root/v2l.gguf -p 0 -n 4 -r 1 > $OUT/ncu-$k.txt 2>&1
    echo "== $k"
    grep -E "Duration|DRAM Throughput|L2 Hit|L1/TEX Hit|Mem Busy|Max Bandwidth|Mem Pipes|Issued Warp|No Eligible|Active Warps|Eligible Warps|Stall Long|Stall LG|Stall Barrier|Stall Short|Warp Cycles Per Issued|Sectors/Req|Uncoalesced|L2 Compression|Bank Conflicts" $OUT/ncu-$k.txt | head -30
done
echo "total $SECONDS s"
