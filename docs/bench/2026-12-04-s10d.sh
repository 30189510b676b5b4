#!/bin/bash
# Tenth session, fourth call. s10c: test_gpu_moe's layer cases pass at T=6 and 20 with the add
# fusion's source check (83c0189), but the routed ADD fusion then no longer fired at decode (count
# assertion); V2-Lite -0.4% against c46382b. Now the planner keeps the next result off the sources of
# the nodes before it (7a3...: core/graph.cpp), so the fusion fires again and the check stays a
# safety net. This call: main's test_gpu_ops, test_gpu_moe, test_gpu_attention; V2-Lite c46382b
# ("prefix") vs main vs rope-fold (rebased), three rounds; 1B prefix vs main (the plan changed for
# every model; predicted +-0.5%). Carry: build-deps, .carry/next10
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/next10 main ropefold prefix test_gpu_moe test_gpu_ops test_gpu_attention
D=/root/bins B=$D/main R=$D/ropefold P=$D/prefix
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
run_suites test_gpu_moe test_gpu_ops test_gpu_attention
wait
{
    for i in 1 2 3; do
        echo "v2l tg64 | prefix | $(bench_rows $P -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | main | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | ropefold | $(bench_rows $R -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "l1 tg128 | prefix | $(bench_rows $P -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | main | $(bench_rows $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
