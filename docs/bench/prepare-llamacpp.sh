#!/bin/bash
# Fetches llama.cpp's source for a side-by-side GPU benchmark (gpu-vs-llamacpp.sh) without network
# access on the device: the llama-cpp-python sdist from PyPI carries llama.cpp under vendor/. Keeps
# what llama-bench with the CUDA backend needs and packs it into .lcpp/llama.cpp.tar.gz (git-ignored;
# name .lcpp in the device call's carry). It is a reference for measuring, never part of minfer.
# Usage (in the repository root): bash docs/bench/prepare-llamacpp.sh [VERSION]
set -euo pipefail
version=${1:-0.3.36}
tmp=$(mktemp -d)
pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp" > /dev/null
tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$tmp"
src="$tmp/llama_cpp_python-$version/vendor/llama.cpp"
(cd "$src" && rm -rf docs models tests examples benches conversion scripts gguf-py media app pocs grammars skills ci \
    requirements ./*.py)
for d in "$src"/ggml/src/ggml-*/; do
    case "$(basename "$d")" in ggml-cpu | ggml-cuda) ;; *) rm -rf "$d" ;; esac
done
find "$src/tools" -mindepth 1 -maxdepth 1 ! -name llama-bench -exec rm -rf {} +
printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\nadd_subdirectory(llama-bench)\n' > "$src/tools/CMakeLists.txt"
echo "llama-cpp-python $version" > "$src/MINFER_SOURCE"
mkdir -p .lcpp
tar -czf .lcpp/llama.cpp.tar.gz -C "$(dirname "$src")" llama.cpp
rm -rf "$tmp"
ls -la .lcpp/llama.cpp.tar.gz
