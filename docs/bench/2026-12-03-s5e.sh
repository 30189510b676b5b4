#!/bin/bash
# Fifth session, second series, call 2 of 3 (right after s5d): SmolLM2's second piece; where the
# V2-Lite decode step's attention time goes with depth: docs/bench/profile-decode.sh with ncu timing
# only the attention kernels (regex flash|combine) at depths 4096 and 16384, and every kernel at
# depth 256 (a one-ubatch fill), on the f16 tree (the old combine) and, at 16384, the comb tree.
# Carry: .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ab.d
set -u
export LD_LIBRARY_PATH=/root/bd/lib:${LD_LIBRARY_PATH:-}
[ -d /root/pieces ] && [ -x /root/t-f16/build-gpu/minfer ] || { echo "the machine went cold"; exit 1; }
cp .carry/*.part-ab.d/* /root/pieces/
C=/root/t-comb/build-gpu/minfer
V=/root/deepseek-v2-lite-q4_0.gguf
for t in f16:4096 f16:16384 comb:16384; do
    IFS=: read -r w d <<< "$t"
    mkdir -p $OUT/p$w$d && OUT=$OUT/p$w$d timeout 150 bash docs/bench/profile-decode.sh /root/t-$w/build-gpu/minfer $V $d 'flash|combine' > $OUT/profile-v2l-attn-$w-$d.md 2>&1
    echo "== $w tree, depth $d, attention kernels only ($SECONDS s)"; head -8 $OUT/profile-v2l-attn-$w-$d.md
    rm -f $OUT/p$w$d/*.csv
done
mkdir -p $OUT/p256 && OUT=$OUT/p256 timeout 200 bash docs/bench/profile-decode.sh $C $V 256 > $OUT/profile-v2l-256.md 2>&1
rm -f $OUT/p256/*.csv
echo "== depth 256, every kernel ($SECONDS s)"; head -24 $OUT/profile-v2l-256.md
echo "total $SECONDS s"
