#!/bin/bash
# Fifth session, second series, call 3 of 3 (right after s5e): SmolLM2's last piece, joined and
# checked; test_gpu_model on the candidate (comb tree: all three changes); then a real model's prefill through the MMQ
# kernel: perplexity of SmolLM2 (Q4_1) over the repository's docs, -c 512 (256-token batches, so
# every matmul takes the tensor-core kernel), CPU as the base, main's GPU build and the candidate's
# compared with it (KL divergence, same top token).
# Carry: .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ac.d
set -u
export LD_LIBRARY_PATH=/root/bd/lib:${LD_LIBRARY_PATH:-}
[ -d /root/pieces ] && [ -x /root/t-comb/build-gpu/minfer ] || { echo "the machine went cold"; exit 1; }
cp .carry/*.part-ac.d/* /root/pieces/
M=/root/.cache/minfer/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p /root/.cache/minfer && cat /root/pieces/*.part-* > $M
echo "sha256 $(sha256sum $M | cut -c1-16) (want b179c9523d0e6a0f)"
timeout 150 /root/t-comb/build-gpu/tests/test_gpu_model > $OUT/test_gpu_model.log 2>&1; echo "test_gpu_model rc $?: $SECONDS s"
grep -E "MESSAGE|test cases|assertions" -A1 $OUT/test_gpu_model.log | grep -vE "^--" | tail -12
grep -B3 -A12 "ERROR" $OUT/test_gpu_model.log | head -30
cat README.md docs/*.md > /root/ppl.txt
ppl() { timeout 120 "$@" -m $M -f /root/ppl.txt -c 512 --chunks 8 --kl-base /root/ppl-cpu.bin 2>$OUT/ppl-err.log | tail -5; }
echo "== CPU (base)"; ppl build-gpu/minfer perplexity --device cpu
echo "== main, GPU"; ppl build-gpu/minfer perplexity --device cuda
echo "== candidate, GPU"; ppl /root/t-comb/build-gpu/minfer perplexity --device cuda
echo "total $SECONDS s"
