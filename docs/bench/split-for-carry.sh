#!/bin/bash
# A file larger than what one device call carries (64 MiB with everything else) goes over in pieces:
# this splits FILE into .carry/<piece>.d/ folders (git-ignored) of at most MB megabytes (default 48)
# and prints, for each piece, the carry list and the device command that adds it to DIR/NAME (default
# DIR /root/.cache/minfer, where the test suites look for models). Run the calls back to back: the
# machine keeps /root only while it stays warm between them.
# Usage: bash docs/bench/split-for-carry.sh FILE [MB] [DIR]
set -euo pipefail
file=$1 mb=${2:-48} dir=${3:-/root/.cache/minfer}
name=$(basename "$file")
rm -rf .carry && mkdir -p .carry
split -b "${mb}M" "$file" ".carry/$name.part-"
redirect=">"
for p in .carry/"$name".part-*; do
    piece=$(basename "$p")
    mkdir -p ".carry/$piece.d" && mv "$p" ".carry/$piece.d/"
    echo "carry [\"build-deps\", \".carry/$piece.d\"]; command: mkdir -p $dir && cat .carry/$piece.d/$piece $redirect $dir/$name && ls -l $dir/$name"
    redirect=">>"
done
echo "last: sha256sum $dir/$name should start with $(sha256sum "$file" | cut -c1-16)"
