#!/bin/bash
# Twelfth session, call 9: why the decode kernels take 4-14 us in place (s12d). ncu's launch,
# occupancy, speed-of-light and warp-state sections for one launch each of the MLA kernel, the routed
# gate_up and down MUL_MAT_IDs and a dense matvec, in a V2-Lite decode step at depth 0 (main 3137271;
# CUDA graphs off so each launch is seen, clocks left alone); then the launch floor.
# Binary built on the development machine (sm_90, Release) in the git-ignored .carry/s12i.
# Carry: build-deps, .carry/s12i
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/s12i main
B=/root/bins/main
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
for k in flash_attn_mla_kernel matvec_q_id_kernel matvec_q_id_weighted_kernel matvec_q_kernel; do
    MINFER_CUDA_GRAPHS=0 timeout 120 ncu --clock-control none -k "regex:$k" -s 200 -c 1 \
        --section LaunchStats --section Occupancy --section SpeedOfLight --section WarpStateStats \
        $B bench -m /root/v2l.gguf -p 0 -n 4 -r 1 > $OUT/ncu-$k.txt 2>&1
    echo "== $k"; grep -E "Duration|Grid Size|Block Size|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|Waves Per SM|Stall|cycles being stalled|Warp Cycles Per Issued" $OUT/ncu-$k.txt | head -24
done
$B bench --launch-floor
echo "total $SECONDS s"
