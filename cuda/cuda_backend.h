// The CUDA backend's entry points, as plain C++ (no CUDA headers) so tools/backends.cpp and any
// other host code can name it without nvcc.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"

namespace mf {

// True when device 0 (the one the registry creates) exists and has compute capability >= 9.0, the
// sm_90 code this build carries. Otherwise false, and *why says what is missing, e.g.
// "no CUDA device found" or "GPU NVIDIA A10 has compute capability 8.6; this build needs sm_90".
bool cuda_available(std::string* why);

// A backend on the given device: device memory, one stream, kernels from cuda/*.cu.
// Throws Error when the device cannot be used (see cuda_available).
std::unique_ptr<Backend> make_cuda_backend(int device = 0);

// How many of the last computed graph's nodes a CUDA backend's fusions took into a neighbour's
// launch instead of launching them (CudaBackend::run_nodes; counted when the graph was last run
// node by node, so a replayed CUDA graph keeps its capture's count). Tests check with it that a
// fusion fires; b must come from make_cuda_backend.
size_t cuda_fused_nodes(const Backend& b);
// How many quantized MUL_MATs of the last computed graph quantized their activations inside the
// matvec instead of launching the quantizer (counted as cuda_fused_nodes is).
size_t cuda_quantized_inside(const Backend& b);
// How many launches of the last computed graph went to the second stream (nodes flagged
// TENSOR_SIDE; counted as cuda_fused_nodes is). MINFER_CUDA_SIDE=0 makes it 0.
size_t cuda_side_launches(const Backend& b);

// What a dependent kernel launch costs on device 0 apart from any work (cuda/launch_floor.cu;
// `minfer bench --launch-floor`): chains of `chain` launches, each waiting for the one before, captured
// in a CUDA graph and replayed `reps` times, per kernel shape, with and without overlapped
// (programmatic dependent) launches. A decode step cannot take less than its critical path's launches
// times this. Rows "grid barrier" run the same steps as phases of one persistent cooperative launch.
struct LaunchFloorRow {
    std::string kernel;
    unsigned blocks = 0, threads = 0;
    std::string how;  // "launch", "launch, overlapped" or "grid barrier"
    double us = 0.0;  // a step, on average
};
std::vector<LaunchFloorRow> cuda_launch_floor(int chain = 256, int reps = 20);

}  // namespace mf
