#!/bin/bash
# Prepared at the end of the ninth session for the next one (not run: no device time was left).
# Binaries built on the development machine (sm_90, Release), xz-compressed in the git-ignored
# .carry/next9: main c46382b (the code as main at the session's end) with its test_gpu_attention
# and test_gpu_moe (test_gpu_ops is left
# out for the carry limit; it passed on b42f0db and has not changed since); wip/rope-fold 1350fa1's
# minfer and test_gpu_attention; 8016357's minfer (old_8016357). First the suites (the last
# commits' cuda_fused_nodes assertions and new cases have not run), then main against 8016357 on the
# 1B (the check of 8bac622's set_rows) and rope-fold against main on V2-Lite (predicted +1.5-2%),
# with MINFER_CUDA_FUSE_CONCAT=0 in the branch as the third row. Rebuild the binaries if main moved.
# Carry: build-deps, .carry/next9
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/next9 main ropefold old_8016357 test_gpu_attention test_gpu_moe \
    test_gpu_attention_ropefold
D=/root/bins B=$D/main R=$D/ropefold O=$D/old_8016357
$B bench --help > /dev/null 2>&1 || { echo "carried binaries do not run: $($B bench --help 2>&1 | head -2)"; exit 1; }
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
run_suites test_gpu_attention test_gpu_moe test_gpu_attention_ropefold
wait
run() { bench_rows "$@"; }
{
    for i in 1 2 3; do
        echo "l1 tg128 | old | $(run $O -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | ropefold | $(run $R -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | ropefold FUSE_CONCAT=0 | $(MINFER_CUDA_FUSE_CONCAT=0 run $R -m /root/v2l.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg16 @ 16384 | main | $(T=90 run $B -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
    echo "v2l tg16 @ 16384 | ropefold | $(T=90 run $R -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384)"
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
