#!/bin/bash
# Fifth session, call 2 of 3 (right after s5a, while /root survives): SmolLM2's second piece; ncu on
# one MMQ prefill launch of the 8B (main against wip/mmq-i2f: pipe use and stall reasons), and where a
# V2-Lite decode step's time goes at depth 4096 (docs/bench/profile-decode.sh).
# Carry: .device, .carry/SmolLM2-135M-Instruct.Q4_1.gguf.part-ab.d
set -u
export LD_LIBRARY_PATH=/root/bd/lib:${LD_LIBRARY_PATH:-}
[ -d /root/pieces ] && [ -x build-gpu/minfer ] || { echo "the machine went cold: /root or build-gpu is gone"; exit 1; }
cp .carry/*.part-ab.d/* /root/pieces/
B=./build-gpu/minfer
M="regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active"
for w in main mmq; do
    X=$B; [ $w = main ] || X=/root/t-$w/build-gpu/minfer
    timeout 120 ncu --clock-control none -k regex:matmul_q_kernel -s 2 -c 1 --metrics "$M" $X bench -m /root/l8.gguf -p 512 -n 0 -r 1 > $OUT/ncu-mmq-$w.txt 2>&1
    echo "ncu $w rc $?: $SECONDS s"
done
python3 - $OUT/ncu-mmq-main.txt $OUT/ncu-mmq-mmq.txt <<'PY' | tee $OUT/ncu-mmq-table.txt
import re, sys
def vals(p):
    d = {}
    for line in open(p):
        m = re.match(r"\s+(\S+)\s+(\S+)?\s+([\d.,]+)\s*$", line)
        if m: d[m.group(1)] = float(m.group(3).replace(",", ""))
    return d
a, b = vals(sys.argv[1]), vals(sys.argv[2])
for k in sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0), b.get(k, 0))):
    if max(a.get(k, 0), b.get(k, 0)) >= 0.5 or "duration" in k:
        print(f"{k:90s} {a.get(k, float('nan')):>10.2f} {b.get(k, float('nan')):>10.2f}")
PY
[ $SECONDS -lt 300 ] && timeout 250 bash docs/bench/profile-decode.sh $B /root/v2l.gguf 4096 > $OUT/profile-v2l-4096.md 2>&1
head -25 $OUT/profile-v2l-4096.md
echo "total $SECONDS s"
