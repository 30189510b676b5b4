#!/bin/bash
# Twelfth session, call 12: test_gpu_moe on main 303bccd (the TOP_K kernels' shared row prologue).
# Carry: build-deps, .carry/s12l
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s12l test_gpu_moe
run_suites test_gpu_moe
