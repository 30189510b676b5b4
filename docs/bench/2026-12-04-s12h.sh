#!/bin/bash
# Twelfth session, call 8: every GPU suite but test_gpu_model on main bef05a8 (topk-rank merged, the
# launch-floor measurement and MINFER_CUDA_TWICE with its session test).
# Binaries built on the development machine (sm_90, Release) in the git-ignored .carry/s12h.
# Carry: build-deps, .carry/s12h
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }  # the tests' compiled-in source dir
S="test_gpu_ops test_gpu_moe test_gpu_attention test_gpu_deepseek2 test_gpu_gemma3 test_gpu_attn_backends"
unpack_bins .carry/s12h $S
run_suites $S
echo "total $SECONDS s"
