#!/bin/bash
# Second call after branches-build.sh (same warm machine): each branch alternated with main on the
# workload its prediction names (docs/PERFORMANCE.md, "Ready for the next GPU session").
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
B=./build-gpu/minfer
source docs/bench/device-lib.sh
run() { bench_rows "$@"; }
ab() {  # ab BRANCH ARGS...: two rounds, main first, then the branch
    local b=$1; shift
    [ -x /root/t-$b/build-gpu/minfer ] || { echo "$b: not built"; return; }
    for i in 1 2; do
        echo "$* | main | $(run $B "$@")"
        echo "$* | $b | $(run /root/t-$b/build-gpu/minfer "$@")"
    done
}
{
    ab mmq-big -m /root/l8.gguf -p 512 -n 0 -r 3
    ab f16-wide -m /root/l1f.gguf -p 512 -n 0 -r 3
    ab moe-stack -m /root/v2l.gguf -p 0 -n 64 -r 3
    ab swiglu-quant -m /root/v2l.gguf -p 0 -n 64 -r 3
    ab swiglu-quant -m /root/l8.gguf -p 0 -n 128 -r 3
    T=60 ab fa-prefill-splits -m /root/l8.gguf -p 16 -n 0 -r 3 --depth 16384
    ab mla-chains -m /root/v2l.gguf -p 0 -n 64 -r 3
    T=60 ab mla-chains -m /root/v2l.gguf -p 0 -n 16 -r 2 --depth 16384
} 2>&1 | tee $OUT/ab.log
echo "total $SECONDS s"
