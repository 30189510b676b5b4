#!/bin/bash
# Ninth session, first call: main (58985ea; binaries of 8b7081f, the same code) and wip/add-fuse
# (a2d1888), minfer, test_gpu_ops of both and main's test_gpu_moe, built on the development machine
# (CUDA 13, sm_90, Release) and carried xz-compressed in .carry/c1. Both test_gpu_ops suites first
# (the bitwise fusion test and add-fuse's new case have not run on a GPU), then three alternating
# A/B rounds (MINFER_CUDA_FUSE_ADD=0 isolates the add fusion inside one build), then an ncu profile
# of the V2-Lite decode step (docs/bench/profile-decode.sh), then racecheck over test_gpu_moe's
# decode-shape case alone with what time is left.
# Carry: build-deps, .carry/c1
set -u
export LD_LIBRARY_PATH=$PWD/build-deps/lib:${LD_LIBRARY_PATH:-}
source docs/bench/device-lib.sh
D=/root/bins
mkdir -p $D $OUT/prof
for f in main addfuse test_gpu_ops test_gpu_ops_addfuse test_gpu_moe; do
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        .carry/c1/$f.xz $D/$f && chmod +x $D/$f
done
B=$D/main A=$D/addfuse
$A bench --help > /dev/null 2>&1 && $B bench --help > /dev/null 2>&1 || { echo "carried binaries do not run: $($A bench --help 2>&1 | head -2)"; exit 1; }
echo "binaries ready: $SECONDS s"
$B synth --shape deepseek-v2-lite --type q4_0 -o /root/v2l.gguf > /dev/null 2>&1 &
$B synth --shape llama-1b --type q4_0 -o /root/l1.gguf > /dev/null 2>&1 &
$B synth --shape llama-8b --type q4_0 -o /root/l8.gguf > /dev/null 2>&1 &
for t in test_gpu_ops test_gpu_ops_addfuse; do
    timeout 120 $D/$t > $OUT/$t.log 2>&1
    echo "$t rc $?: $(grep -E 'test cases' $OUT/$t.log)"
    grep -B3 -A12 "ERROR" $OUT/$t.log | head -30
done
wait
echo "suites done: $SECONDS s"
run() { bench_rows "$@"; }
{
    for i in 1 2 3; do
        echo "v2l tg64 | main | $(run $B -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | addfuse | $(run $A -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "v2l tg64 | addfuse FUSE_ADD=0 | $(MINFER_CUDA_FUSE_ADD=0 run $A -m /root/v2l.gguf -p 0 -n 64 -r 3)"
        echo "l8 tg128 | main | $(run $B -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l8 tg128 | addfuse | $(run $A -m /root/l8.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | main | $(run $B -m /root/l1.gguf -p 0 -n 128 -r 3)"
        echo "l1 tg128 | addfuse | $(run $A -m /root/l1.gguf -p 0 -n 128 -r 3)"
    done
    echo "at $SECONDS s"
} 2>&1 | tee $OUT/ab.log
P=$A; grep -q "test cases:.*0 failed" $OUT/test_gpu_ops_addfuse.log || P=$B
OUT=$OUT/prof timeout 200 bash docs/bench/profile-decode.sh $P /root/v2l.gguf 0 > $OUT/profile-v2l.md 2>&1
echo "v2l profile ($P) rc $? at $SECONDS s"
rm -f $OUT/prof/*.csv
cat $OUT/profile-v2l.md
left=$((540 - SECONDS))
if [ $left -gt 60 ]; then
    timeout $left compute-sanitizer --tool racecheck --error-exitcode 9 $D/test_gpu_moe -tc="decode-shape*" > /root/race.log 2>&1
    echo "racecheck decode-shape rc $? ($left s allowed): $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|test cases' /root/race.log | paste -sd' ')"
    grep -v "^\[doctest\]" /root/race.log | head -60 > $OUT/racecheck.txt
fi
echo "total $SECONDS s"
