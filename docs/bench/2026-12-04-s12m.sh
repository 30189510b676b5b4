#!/bin/bash
# Twelfth session, call 13: main a0502f9 (launch_overlapped through the shared launch_kernel): two GPU
# suites and the launch floor.
# Carry: build-deps, .carry/s12m
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
unpack_bins .carry/s12m minfer test_gpu_moe test_gpu_attention
run_suites test_gpu_moe test_gpu_attention
/root/bins/minfer bench --launch-floor
