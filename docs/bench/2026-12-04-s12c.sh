#!/bin/bash
# Twelfth session, call 3: what a dependent kernel launch costs on the H200, apart from its work
# (`minfer bench --launch-floor`, wip/launch-floor = main + the measurement), twice; then a fresh
# ncu profile of a V2-Lite decode step on the same build (main's kernels; docs/bench/profile-decode.sh).
# Binary built on the development machine (sm_90, Release) in the git-ignored .carry/s12c.
# Prediction (written before the run): an overlapped launch of an empty kernel ~1.5 us, a tiny
# dependent step ~2.5 us, the 4 MiB read ~3.5 us; so V2-Lite's ~420 launches on the critical path
# a step cost ~1.1 ms of its 2.2 ms before any of their work.
# Carry: build-deps, .carry/s12c
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/s12c floor
B=/root/bins/floor
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
for i in 1 2; do $B bench --launch-floor | tee -a $OUT/floor.md; done
echo "v2l tg64 | floor build | $(bench_rows $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
T=240 timeout 300 bash docs/bench/profile-decode.sh $B /root/v2l.gguf 0 | tee $OUT/profile-d0.md
echo "total $SECONDS s"
