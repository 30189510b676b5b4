#!/bin/bash
# Fifth session, second series, call 2 of 3 (right after s5d): SmolLM2's second piece; where the
# V2-Lite decode step's attention time goes with depth: docs/bench/profile-decode.sh with ncu timing
# only the attention kernels (regex flash|combine) at depths 4096 and 16384, and every kernel at
# depth 256 (a one-ubatch fill), on the candidate (f16 tree).
# Carry: .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ab.d
set -u
export LD_LIBRARY_PATH=/root/bd/lib:${LD_LIBRARY_PATH:-}
[ -d /root/pieces ] && [ -x /root/t-f16/build-gpu/minfer ] || { echo "the machine went cold"; exit 1; }
cp .carry/*.part-ab.d/* /root/pieces/
C=/root/t-f16/build-gpu/minfer
V=/root/deepseek-v2-lite-q4_0.gguf
for d in 4096 16384; do
    mkdir -p $OUT/p$d && OUT=$OUT/p$d timeout 150 bash docs/bench/profile-decode.sh $C $V $d 'flash|combine' > $OUT/profile-v2l-attn-$d.md 2>&1
    echo "== depth $d, attention kernels only ($SECONDS s)"; cat $OUT/profile-v2l-attn-$d.md | head -8
    rm -f $OUT/p$d/*.csv
done
mkdir -p $OUT/p256 && OUT=$OUT/p256 timeout 200 bash docs/bench/profile-decode.sh $C $V 256 > $OUT/profile-v2l-256.md 2>&1
rm -f $OUT/p256/*.csv
echo "== depth 256, every kernel ($SECONDS s)"; head -24 $OUT/profile-v2l-256.md
echo "total $SECONDS s"
