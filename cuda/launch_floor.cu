// What a dependent kernel launch costs on this device, apart from any work: chains of kernels, each
// waiting for the one before it, captured in a CUDA graph and replayed (as a decode step is). The
// time a step of a model cannot go below is about its launches on the critical path times this.
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "core/common.h"
#include "cuda/common.cuh"
#include "cuda/cuda_backend.h"

namespace mf {

namespace {

// Waits for the kernel before it and lets the next one start: a launch and nothing else.
__global__ void floor_empty_kernel() { begin_overlapped_kernel(); }

// Reads the n floats the kernel before it wrote and writes n for the next one: the smallest dependent
// step of a decode (a norm, a ROPE, a quantizer), over a grid of any size.
__global__ void floor_pass_kernel(const float* in, float* out, int n) {
    begin_overlapped_kernel();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = in[i] * 0.5f + 1.0f;
}

// The same step plus a matvec's weights: the grid sums n_vec 16-byte vectors of a buffer nobody
// writes (each thread's first one requested before the wait, as the decode matvecs do), each thread
// its share, into its element. What a bandwidth-bound kernel of that size costs in a chain.
__global__ void floor_read_kernel(const float* in, float* out, int n, const float4* weights, int64_t n_vec) {
    const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
    float4 v = tid < n_vec ? weights[tid] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    begin_overlapped_kernel();
    float acc = v.x + v.y + v.z + v.w;
    for (int64_t i = tid + stride; i < n_vec; i += stride) {
        const float4 w = weights[i];
        acc += w.x + w.y + w.z + w.w;
    }
    if (tid < n) out[tid] = in[tid] * 0.5f + acc;
}

}  // namespace

std::vector<LaunchFloorRow> cuda_launch_floor(int chain, int reps) {
    MF_ASSERT(chain > 0 && reps > 0);
    int sms = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    constexpr int n = 2048;  // an activation row of a small model
    float* buf = nullptr;
    CUDA_CHECK(cudaMalloc(&buf, 2 * n * sizeof(float)));
    CUDA_CHECK(cudaMemset(buf, 0, 2 * n * sizeof(float)));
    // Weights for the read case: 4 MiB (a small model's attention projection), 16 copies (64 MiB) in
    // turn, so that a chain reads from DRAM, not from the 50 MB L2.
    constexpr int64_t weight_bytes = 4 << 20, copies = 16;
    float4* weights = nullptr;
    CUDA_CHECK(cudaMalloc(&weights, weight_bytes * copies));
    CUDA_CHECK(cudaMemset(weights, 0, weight_bytes * copies));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaEvent_t t0 = nullptr, t1 = nullptr;
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));

    struct Case {
        const char* kernel;
        unsigned blocks, threads;
    };
    const unsigned all = unsigned(sms), eight = 8u * unsigned(sms);
    const Case cases[] = {{"empty", 1, 32},
                          {"pass 2048 floats", 1, 256},
                          {"pass 2048 floats", all, 128},
                          {"pass 2048 floats", eight, 128},
                          {"pass 2048 floats, read 4 MiB", eight, 128}};
    std::vector<LaunchFloorRow> rows;
    for (const Case& c : cases) {
        for (bool overlapped : {false, true}) {
            CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
            for (int i = 0; i < chain; ++i) {
                const float* in = buf + (i % 2) * n;
                float* out = buf + (1 - i % 2) * n;
                if (c.kernel[0] == 'e') {
                    launch_kernel(overlapped, floor_empty_kernel, c.blocks, c.threads, 0, stream);
                } else if (std::strstr(c.kernel, "read")) {
                    const float4* w = weights + (i % copies) * (weight_bytes / 16);
                    launch_kernel(overlapped, floor_read_kernel, c.blocks, c.threads, 0, stream, in, out, n, w,
                                  weight_bytes / 16);
                } else {
                    launch_kernel(overlapped, floor_pass_kernel, c.blocks, c.threads, 0, stream, in, out, n);
                }
            }
            cudaGraph_t graph = nullptr;
            CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
            cudaGraphExec_t exec = nullptr;
            CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
            CUDA_CHECK(cudaGraphLaunch(exec, stream));  // warm-up
            CUDA_CHECK(cudaEventRecord(t0, stream));
            for (int r = 0; r < reps; ++r) CUDA_CHECK(cudaGraphLaunch(exec, stream));
            CUDA_CHECK(cudaEventRecord(t1, stream));
            CUDA_CHECK(cudaEventSynchronize(t1));
            float ms = 0.0f;
            CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
            rows.push_back({c.kernel, c.blocks, c.threads, overlapped, 1e3 * double(ms) / (double(reps) * chain)});
            CUDA_CHECK(cudaGraphExecDestroy(exec));
            CUDA_CHECK(cudaGraphDestroy(graph));
        }
    }
    CUDA_CHECK(cudaEventDestroy(t0));
    CUDA_CHECK(cudaEventDestroy(t1));
    CUDA_CHECK(cudaStreamDestroy(stream));
    CUDA_CHECK(cudaFree(buf));
    CUDA_CHECK(cudaFree(weights));
    return rows;
}

}  // namespace mf
