#!/bin/bash
# Thirteenth session: how much of a tg token is the device's own work (`minfer bench --busy`, new), for
# V2-Lite, the 1B and the 8B (q4_0), at depth 0 and V2-Lite at 16k. Main + --busy, built here (sm_90,
# Release), carried xz-compressed in the git-ignored .carry/s13b.
# Prediction (written before the run): the host's share (inputs uploaded, the graph's signature and
# launch, 400 KB of logits read back into pageable memory, the bench loop) is ~60-100 us a token:
# ~3-4% of a V2-Lite token, ~6-10% of a 1B token.
# Carry: build-deps, .carry/s13b
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
unpack_bins .carry/s13b minfer
B=/root/bins/minfer
[ -f /root/l1.gguf ] || $B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
[ -f /root/l8.gguf ] || $B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
[ -f /root/v2l.gguf ] || $B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
wait
busy() { timeout ${T:-60} $B bench "$@" 2>&1 | grep -E "^\| [a-z]|busy" | grep -v "^| model" | sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '; }
{
    for m in v2l l1 l8; do
        echo "$m tg64 | $(busy -m /root/$m.gguf -p 0 -n 64 -r 3 --busy)"
        echo "$m tg64 plain | $(busy -m /root/$m.gguf -p 0 -n 64 -r 3)"
    done
    echo "v2l tg16 @ 16k | $(T=90 busy -m /root/v2l.gguf -p 0 -n 16 -r 1 --depth 16384 --busy)"
} 2>&1 | tee $OUT/busy.log
echo "total $SECONDS s"
