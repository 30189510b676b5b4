#!/bin/bash
# Device-side build: configure + build minfer with the carried build-deps (headers and .so files
# the device lacks). Usage: bash .device/build.sh [targets...]  -> build in build-gpu/
set -e
D=$PWD/build-deps
export LD_LIBRARY_PATH=$D/lib:$LD_LIBRARY_PATH
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DDOCTEST_INCLUDE_DIR=$D/include -DSTB_INCLUDE_DIR=$D/include -DNLOHMANN_JSON_INCLUDE_DIR=$D/include \
  -DSENTENCEPIECE_INCLUDE_DIR=$D/include -DSENTENCEPIECE_LIB=$D/lib/libsentencepiece.so \
  -DPCRE2_LIB=$D/lib/libpcre2-8.so -DCMAKE_CXX_FLAGS="-isystem $D/include" >/dev/null
ninja -C build-gpu "$@"
