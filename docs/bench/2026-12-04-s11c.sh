#!/bin/bash
# Eleventh session, call 3: where a replayed V2-Lite decode step goes, in place (nsys, node by node,
# docs/bench/profile-nsys.sh), on main 3b77816 (= .carry/next-s11b/qx.xz); and qrope-mla's MLA kernel
# in SASS against main's: how many global loads come before the first barrier (s11b: the kernel took
# 34.7 us a launch against 11.8 under ncu).
# Carry: build-deps, .carry/next-s11b
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
[ -x /root/bins/qx ] || unpack_bins .carry/next-s11b main qrope qx
D=/root/bins
[ -f /root/v2l.gguf ] || $D/qx synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1
for b in main qrope; do
    cuobjdump -sass $D/$b 2>/dev/null | python3 -c '
import sys, re
funcs, cur = [], None
for l in sys.stdin:
    if "Function :" in l:
        cur = [l.strip(), []]
        funcs.append(cur)
    elif cur is not None and re.search(r"/\*[0-9a-f]{4,}\*/", l):
        cur[1].append(l)
for fn, ins in funcs:
    if "flash_attn_mla_kernel" not in fn: continue
    first_bar = next((i for i, l in enumerate(ins) if "BAR.SYNC" in l), len(ins))
    ldg = [i for i, l in enumerate(ins) if "LDG" in l]
    print(sys.argv[1], fn[-70:], "| instr", len(ins), "| LDG", len(ldg), "before first BAR", sum(i < first_bar for i in ldg),
          "| first BAR at", first_bar, "| DFMA/DMUL", sum(("DFMA" in l or "DMUL" in l) for l in ins),
          "| STL", sum("STL" in l for l in ins), "LDL", sum("LDL" in l for l in ins))
' $b
done
OUT=$OUT timeout 240 bash docs/bench/profile-nsys.sh $D/qx /root/v2l.gguf 0 32 2>&1 | tail -40
echo "total $SECONDS s"
