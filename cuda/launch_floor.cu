// What a dependent kernel launch costs on this device, apart from any work: chains of kernels, each
// waiting for the one before it, captured in a CUDA graph and replayed (as a decode step is). The
// time a step of a model cannot go below is about its launches on the critical path times this.
// Beside it, the same chains as the phases of one persistent launch with a grid barrier between
// them: what a step would pay a boundary if a layer were one kernel.
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

// A thread's share of a weight buffer nobody writes: vectors tid, tid + stride, ... of n_vec, the
// first AHEAD of them requested early (before a wait), the rest as they are summed.
template <int AHEAD>
struct WeightShare {
    float4 v[AHEAD];
    __device__ __forceinline__ void request(const float4* w, int64_t n_vec, int64_t tid, int64_t stride) {
#pragma unroll
        for (int k = 0; k < AHEAD; ++k)
            v[k] = tid + k * stride < n_vec ? w[tid + k * stride] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    __device__ __forceinline__ float sum(const float4* w, int64_t n_vec, int64_t tid, int64_t stride) const {
        float acc = v[0].x + v[0].y + v[0].z + v[0].w;
#pragma unroll
        for (int k = 1; k < AHEAD; ++k) acc += v[k].x + v[k].y + v[k].z + v[k].w;
        for (int64_t i = tid + AHEAD * stride; i < n_vec; i += stride) {
            const float4 x = w[i];
            acc += x.x + x.y + x.z + x.w;
        }
        return acc;
    }
};
// Vectors a thread may request ahead: all of the read case's 4 MiB at ~135k threads (2 each).
constexpr int kAllAhead = 4;

// The same step plus a matvec's weights: the grid sums n_vec 16-byte vectors of a buffer nobody
// writes, each thread its share, into its element; each thread's first AHEAD vectors are requested
// before the wait (the decode matvecs request a row's first chunk). What a bandwidth-bound kernel of
// that size costs in a chain.
template <int AHEAD>
__global__ void floor_read_kernel(const float* in, float* out, int n, const float4* weights, int64_t n_vec) {
    const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
    WeightShare<AHEAD> share;
    share.request(weights, n_vec, tid, stride);
    begin_overlapped_kernel();
    const float acc = share.sum(weights, n_vec, tid, stride);
    if (tid < n) out[tid] = in[tid] * 0.5f + acc;
}

// All blocks of the grid meet: each block's arrival is counted once on `count`, which is never
// reset within a launch, so the p-th barrier waits for it to reach p * gridDim.x. A block's first
// thread publishes what the block wrote (release) and sees what the others wrote (acquire); the
// block's threads are ordered against it by __syncthreads. Needs every block resident at once (a
// cooperative launch).
__device__ __forceinline__ void grid_barrier(unsigned* count, unsigned target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(count) : "memory");
        unsigned seen = 0;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(count) : "memory");
        } while (seen < target);
    }
    __syncthreads();
}

// floor_pass_kernel's (weights null) or floor_read_kernel's (weights: `copies` buffers of n_vec
// vectors, used in turn) work, `phases` times in one launch with a grid barrier after each, instead
// of a launch each: what a persistent kernel pays a step. Each thread requests its first AHEAD vectors
// of the next phase's weights before it waits, as floor_read_kernel does before its launch's wait.
template <int AHEAD>
__global__ void floor_barrier_kernel(float* buf, int n, int phases, const float4* weights, int64_t n_vec, int copies,
                                     unsigned* count) {
    const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
    WeightShare<AHEAD> share;
    if (weights) share.request(weights, n_vec, tid, stride);
    for (int p = 0; p < phases; ++p) {
        const float* in = buf + (p % 2) * n;
        float* out = buf + (1 - p % 2) * n;
        if (weights) {
            const float acc = share.sum(weights + int64_t(p % copies) * n_vec, n_vec, tid, stride);
            share.request(weights + int64_t((p + 1) % copies) * n_vec, n_vec, tid, stride);
            if (tid < n) out[tid] = in[tid] * 0.5f + acc;
        } else {
            for (int64_t i = tid; i < n; i += stride) out[i] = in[i] * 0.5f + 1.0f;
        }
        grid_barrier(count, unsigned(p + 1) * gridDim.x);
    }
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
        int ahead;  // the read cases: vectors a thread requests before its wait (1 or kAllAhead)
    };
    const unsigned all = unsigned(sms), eight = 8u * unsigned(sms);
    const char* read1 = "pass 2048 floats, read 4 MiB";
    const char* read_all = "pass 2048 floats, read 4 MiB, all requested before the wait";
    const Case cases[] = {{"empty", 1, 32, 1},
                          {"pass 2048 floats", 1, 256, 1},
                          {"pass 2048 floats", all, 128, 1},
                          {"pass 2048 floats", eight, 128, 1},
                          {read1, eight, 128, 1},
                          {read_all, eight, 128, kAllAhead}};
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
                    launch_kernel(overlapped, c.ahead > 1 ? floor_read_kernel<kAllAhead> : floor_read_kernel<1>,
                                  c.blocks, c.threads, 0, stream, in, out, n, w, weight_bytes / 16);
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
            rows.push_back({c.kernel, c.blocks, c.threads, overlapped ? "launch, overlapped" : "launch",
                            1e3 * double(ms) / (double(reps) * chain)});
            CUDA_CHECK(cudaGraphExecDestroy(exec));
            CUDA_CHECK(cudaGraphDestroy(graph));
        }
    }

    // The same steps as phases of one cooperative launch (every block resident, else the launch is
    // refused), a grid barrier between phases. A grid that does not fit the device is left out.
    unsigned* count = nullptr;
    CUDA_CHECK(cudaMalloc(&count, sizeof(unsigned)));
    const Case barrier_cases[] = {{"pass 2048 floats", all, 128, 1},
                                  {"pass 2048 floats", eight, 128, 1},
                                  {read1, eight, 128, 1},
                                  {read_all, eight, 128, kAllAhead},
                                  {read_all, all, 1024, kAllAhead}};
    for (const Case& c : barrier_cases) {
        const auto kernel = c.ahead > 1 ? floor_barrier_kernel<kAllAhead> : floor_barrier_kernel<1>;
        int per_sm = 0;
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, int(c.threads), 0));
        if (int64_t(per_sm) * sms < c.blocks) continue;
        const bool read = std::strstr(c.kernel, "read") != nullptr;
        auto launch = [&] {
            CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(unsigned), stream));
            cudaLaunchAttribute attr[1];
            attr[0].id = cudaLaunchAttributeCooperative;
            attr[0].val.cooperative = 1;
            cudaLaunchConfig_t config = {};
            config.gridDim = dim3(c.blocks);
            config.blockDim = dim3(c.threads);
            config.stream = stream;
            config.attrs = attr;
            config.numAttrs = 1;
            CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, buf, n, chain,
                                          read ? static_cast<const float4*>(weights) : nullptr,
                                          int64_t(weight_bytes / 16), int(copies), count));
        };
        launch();  // warm-up
        CUDA_CHECK(cudaEventRecord(t0, stream));
        for (int r = 0; r < reps; ++r) launch();
        CUDA_CHECK(cudaEventRecord(t1, stream));
        CUDA_CHECK(cudaEventSynchronize(t1));
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
        rows.push_back({c.kernel, c.blocks, c.threads, "grid barrier", 1e3 * double(ms) / (double(reps) * chain)});
    }
    CUDA_CHECK(cudaFree(count));
    CUDA_CHECK(cudaEventDestroy(t0));
    CUDA_CHECK(cudaEventDestroy(t1));
    CUDA_CHECK(cudaStreamDestroy(stream));
    CUDA_CHECK(cudaFree(buf));
    CUDA_CHECK(cudaFree(weights));
    return rows;
}

}  // namespace mf
