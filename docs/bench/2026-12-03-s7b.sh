#!/bin/bash
# Seventh session, call 2 (warm machine after s7a): each branch A/B against main on its workload.
# Carry: build-deps, .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ab.d
set -u
mkdir -p /root/smol && cp .carry/*/SmolLM2-135M-Instruct.Q4_1.gguf.part-* /root/smol/ 2>/dev/null
bash docs/bench/branches-ab.sh
