#!/bin/bash
# Fifth session, second series, call 1 of 3 (back to back): main, wip/mmq-async (MMQ with cp.async
# stages), wip/f16-async (that plus the F16/BF16 prefill with halves converted once) and wip/combine
# (that plus the new split-attention combine) built side by side from main's tree plus each branch's
# code diff (.device/{mmq,f16,comb}.patch = `git diff main wip/X -- cuda tests core`); all GPU suites
# but test_gpu_model on the comb tree (it holds all three changes); alternating A/B: pp512 for the
# prefill kernels, depth 16384 for the combine; ncu on one MMQ and one F16 prefill launch.
# Carry: build-deps, .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-aa.d
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
R=$PWD
mkdir -p /root/pieces /root/bd && cp .carry/*.part-aa.d/* /root/pieces/ && cp -r build-deps/. /root/bd/
for w in mmq f16 comb; do
    rm -rf /root/t-$w && mkdir -p /root/t-$w
    tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . | tar -xf - -C /root/t-$w
    (cd /root/t-$w && patch -p1 -s < $R/.device/$w.patch && mkdir -p .device && cp $R/.device/build.sh .device/ && ln -sfn $R/build-deps build-deps)
done
( bash .device/build.sh minfer > $OUT/build-main.log 2>&1; echo "main build rc $? at $SECONDS s" ) &
( cd /root/t-mmq && bash .device/build.sh minfer > $OUT/build-mmq.log 2>&1; echo "mmq build rc $? at $SECONDS s" ) &
( cd /root/t-f16 && bash .device/build.sh minfer > $OUT/build-f16.log 2>&1; echo "f16 build rc $? at $SECONDS s" ) &
( cd /root/t-comb && bash .device/build.sh > $OUT/build-comb.log 2>&1; echo "comb build rc $? at $SECONDS s" ) &
wait
B=./build-gpu/minfer C=/root/t-comb/build-gpu/minfer
[ -x $C ] || { tail -30 $OUT/build-comb.log; exit 1; }
( for s in llama-8b:q4_0 llama-1b:q4_0 llama-1b:f16 deepseek-v2-lite:q4_0; do
    IFS=: read -r shape type <<< "$s"; $B synth --shape $shape --type $type -o /root/$shape-$type.gguf > /dev/null 2>&1
  done; echo "synth done at $SECONDS s" ) &
(cd /root/t-comb && timeout 200 ctest --test-dir build-gpu -L gpu -E test_gpu_model --output-on-failure > $OUT/ctest-comb.log 2>&1)
echo "comb-tree ctest rc $?: $SECONDS s"
grep -E "tests passed|Failed|\*\*\*|Passed|Skipped|Not Run" $OUT/ctest-comb.log | tail -10
grep -B3 -A12 "ERROR" $OUT/ctest-comb.log | head -40
wait
bin() { case $1 in main) echo $B;; *) echo /root/t-$1/build-gpu/minfer;; esac; }
run() { local x=$(bin $1); shift; timeout ${T:-60} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | tail -1 | sed 's/| [a-z0-9]* | cuda | flash //'; }
{
for rep in 1 2; do
    for w in main mmq f16; do echo "l8 q4_0 pp512 $w $(run $w -m /root/llama-8b-q4_0.gguf -p 512 -n 0 -r 3)"; done
    for w in main mmq; do echo "l1 q4_0 pp512 $w $(run $w -m /root/llama-1b-q4_0.gguf -p 512 -n 0 -r 3)"; done
    for w in main f16; do echo "l1 f16 pp512 $w $(run $w -m /root/llama-1b-f16.gguf -p 512 -n 0 -r 3)"; done
done
for rep in 1 2; do
    for w in f16 comb; do echo "v2l d16384 $w $(T=70 run $w -m /root/deepseek-v2-lite-q4_0.gguf -p 0 -n 16 -r 1 --depth 16384)"; done
done
for w in f16 comb; do echo "v2l d4096 $w $(T=70 run $w -m /root/deepseek-v2-lite-q4_0.gguf -p 0 -n 16 -r 1 --depth 4096)"; done
[ $SECONDS -lt 470 ] && for w in f16 comb; do echo "l8 d16384 $w $(T=50 run $w -m /root/llama-8b-q4_0.gguf -p 0 -n 32 -r 1 --depth 16384)"; done
} 2>&1 | tee $OUT/ab.log
echo "A/B done: $SECONDS s"
M="regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active"
[ $SECONDS -gt 540 ] && { echo "no time left for ncu; total $SECONDS s"; exit 0; }
timeout 30 ncu --clock-control none -k regex:matmul_q_kernel -s 2 -c 1 --metrics "$M" $C bench -m /root/llama-8b-q4_0.gguf -p 512 -n 0 -r 1 > $OUT/ncu-mmq-async.txt 2>&1
timeout 30 ncu --clock-control none -k regex:matmul_float_kernel -s 2 -c 1 --metrics "$M" $C bench -m /root/llama-1b-f16.gguf -p 512 -n 0 -r 1 > $OUT/ncu-f16-async.txt 2>&1
for f in mmq-async f16-async; do
    echo "== $f"; grep -E "duration|issue_active|tensor_op|pipe_alu|pipe_fma |pipe_lsu |warps_active|long_scoreboard|barrier|short_scoreboard|mio_throttle|stalled_wait|math_pipe" $OUT/ncu-$f.txt | grep -v TriageCompute | awk '{print $1, $NF}'
done
echo "total $SECONDS s"
