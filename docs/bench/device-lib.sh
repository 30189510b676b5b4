#!/bin/bash
# Helpers the device-call scripts share (source it from the repository root on the device machine).

# branch_tree NAME PATCH: a copy of this tree in /root/t-NAME with PATCH applied (a three-dot diff
# `git diff main...wip/B -- cuda tests core models tools`), ready for .device/build.sh.
branch_tree() {
    local name=$1 patch=$2 root=$PWD
    rm -rf /root/t-$name && mkdir -p /root/t-$name
    tar --exclude=./build-gpu --exclude=./.carry --exclude=./.device --exclude=./.lcpp --exclude=./build-deps -cf - . |
        tar -xf - -C /root/t-$name
    (cd /root/t-$name && patch -p1 -s < $patch && mkdir -p .device && cp $root/.device/build.sh .device/ &&
        ln -sfn $root/build-deps build-deps) || echo "patch $name failed"
}

# bench_rows MINFER ARGS...: `MINFER bench ARGS` cut to its result rows on one line (T: timeout, 40 s).
bench_rows() {
    local x=$1; shift
    timeout ${T:-40} $x bench "$@" 2>&1 | grep -E "^\| [a-z]" | grep -v "^| model" |
        sed 's/| [a-z0-9]* | cuda | flash //' | paste -sd' '
}

# unpack_bins DIR NAME...: binaries built on the development machine and carried xz-compressed,
# DIR/NAME.xz, unpacked (python's lzma; the device has no xz) to /root/bins/NAME, executable.
unpack_bins() {
    local dir=$1; shift
    mkdir -p /root/bins
    for f in "$@"; do
        python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
            "$dir/$f.xz" "/root/bins/$f" && chmod +x "/root/bins/$f"
    done
}

# pack_bins DIR NAME...: (development machine) build/NAME or build/tests/NAME, one tar in one xz
# stream, DIR/bins.tar.xz. The binaries share the CUDA kernels' fatbin, which xz's 64 MiB window
# finds again: eight of them (~15 MB each) take ~10 MB together instead of ~64.
pack_bins() {
    local dir=$1; shift
    local args=()
    for f in "$@"; do
        if [ -f build/tests/$f ]; then args+=(-C "$PWD/build/tests" $f); else args+=(-C "$PWD/build" $f); fi
    done
    mkdir -p $dir && tar cf - "${args[@]}" | xz -9e -T1 > $dir/bins.tar.xz
}

# unpack_pack DIR [DEST]: (device) DIR/bins.tar.xz from pack_bins into DEST (default /root/bins;
# python's tarfile: the device has no xz).
unpack_pack() {
    local dest=${2:-/root/bins}
    mkdir -p $dest
    python3 -c "import tarfile, sys; tarfile.open(sys.argv[1], 'r:xz').extractall(sys.argv[2])" "$1/bins.tar.xz" $dest
}

# run_suites NAME...: the doctest binaries /root/bins/NAME (BINS: another folder; 150 s each at
# most), each log in $OUT (TAG: prefixed to the log names), one line with its counts, then its failures.
# SUITE_ARGS: passed to each binary (doctest's -tc= / -tce= filters).
run_suites() {
    for t in "$@"; do
        timeout 150 "${BINS:-/root/bins}/$t" ${SUITE_ARGS:-} > "$OUT/${TAG:+$TAG-}$t.log" 2>&1
        echo "${TAG:+$TAG }$t rc $?: $(grep -E "test cases" "$OUT/${TAG:+$TAG-}$t.log")"
        grep -B3 -A12 "ERROR" "$OUT/${TAG:+$TAG-}$t.log" | head -30
    done
}
