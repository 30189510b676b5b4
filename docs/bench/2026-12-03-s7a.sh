#!/bin/bash
# Seventh session, call 1: main, the six waiting branches and wip/all (all six merged) built side by
# side; each branch's GPU suites, and every GPU suite but test_gpu_model on wip/all.
# Carry: build-deps, .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-aa.d (first of three
# pieces: the model is over the carry limit; s7c joins them).
set -u
mkdir -p /root/smol && cp .carry/*/SmolLM2-135M-Instruct.Q4_1.gguf.part-* /root/smol/ 2>/dev/null
BRANCHES="mmq-big f16-wide moe-stack fa-prefill-splits swiglu-quant mla-chains all" bash docs/bench/branches-build.sh
