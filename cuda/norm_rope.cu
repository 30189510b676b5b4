// Row-wise kernels: RMS_NORM, ROPE and SOFT_MAX. Each CUDA block owns one row, so a row's reduction
// is a warp shuffle tree plus one shared-memory step, with no atomics and a fixed summation order.
#include "cuda/norm_rope.cuh"

namespace mf {

namespace {

__global__ void rms_norm_kernel(const char* x, Shape4 sx, float eps, const float* w, float* dst) {
    begin_overlapped_kernel();
    const int64_t row = blockIdx.x;
    const float* x_row = reinterpret_cast<const float*>(x + sx.row_offset(row));
    float* dst_row = dst + row * sx.ne[0];
    const float scale = row_rms_scale(x_row, sx.ne[0], eps);
    // Times w as MUL rounds it after RMS_NORM (two roundings, no fma).
    if (w) {
        for (int64_t i = threadIdx.x; i < sx.ne[0]; i += blockDim.x) dst_row[i] = __fmul_rn(x_row[i] * scale, w[i]);
    } else {
        for (int64_t i = threadIdx.x; i < sx.ne[0]; i += blockDim.x) dst_row[i] = x_row[i] * scale;
    }
}

// One block per (head, token) row. The angles are computed in double, as on the CPU: an f32 angle at
// position 4096 is already off by ~2e-4 rad, which would show as a 1e-4 relative error in q and k.
// Each thread redoes pow/sincos for its pairs; at a few heads x tokens x 64 pairs that is cheap next
// to launching a separate table kernel.
// pos_ready: the positions and factors are ready before the graph runs (the backend's
// rope_inputs_ready), so the thread's first pair's angle is taken before the wait: its
// double-precision math overlaps the kernel before.
__global__ void rope_kernel(const char* x, Shape4 sx, const int32_t* pos, bool pos_ready, const float* factors,
                            int n_dims, bool neox, double freq_base, double freq_scale, float* dst) {
    const int64_t row = blockIdx.x;
    const int64_t token = (row / sx.ne[1]) % sx.ne[2];
    const int n_pairs = n_dims / 2;
    const int i0 = threadIdx.x;
    float c0 = 0.0f, s0 = 0.0f;
    if (pos_ready && i0 < n_pairs)
        rope_cos_sin(double(pos[token]), i0, n_dims, freq_base, freq_scale, factors, &c0, &s0);
    begin_overlapped_kernel();
    const float* x_row = reinterpret_cast<const float*>(x + sx.row_offset(row));
    float* dst_row = dst + row * sx.ne[0];
    const double p = double(pos[token]);
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) {
        float c = c0, s = s0;
        if (!pos_ready || i != i0) rope_cos_sin(p, i, n_dims, freq_base, freq_scale, factors, &c, &s);
        const int j = neox ? i : 2 * i;
        const int partner = neox ? n_pairs : 1;
        const float x0 = x_row[j], x1 = x_row[j + partner];
        dst_row[j] = rope_first(x0, x1, c, s);
        dst_row[j + partner] = rope_second(x0, x1, c, s);
    }
    for (int64_t i = n_dims + threadIdx.x; i < sx.ne[0]; i += blockDim.x) dst_row[i] = x_row[i];
}

// Three passes over the row: the maximum, the exponentials (written to dst) and their sum, then the
// scaling. Each thread revisits only the elements it wrote, so the last pass needs no barrier.
__global__ void soft_max_kernel(const char* x, Shape4 sx, const char* mask, Shape4 sm, float scale, float* dst) {
    begin_overlapped_kernel();
    const int64_t row = blockIdx.x;
    const int64_t i1 = row % sx.ne[1];
    const int64_t i2 = (row / sx.ne[1]) % sx.ne[2];
    const int64_t i3 = row / (sx.ne[1] * sx.ne[2]);
    const float* x_row = reinterpret_cast<const float*>(x + sx.row_offset(row));
    const float* m_row =
        mask ? reinterpret_cast<const float*>(mask + i1 * sm.nb[1] + (i2 % sm.ne[2]) * sm.nb[2] + (i3 % sm.ne[3]) * sm.nb[3])
             : nullptr;
    float* dst_row = dst + row * sx.ne[0];
    const int64_t ne0 = sx.ne[0];
    // _rn keeps the multiply-add unfused, rounding as the CPU does.
    auto value = [&](int64_t i) { return m_row ? __fadd_rn(__fmul_rn(x_row[i], scale), m_row[i]) : x_row[i] * scale; };

    float max = -INFINITY;
    for (int64_t i = threadIdx.x; i < ne0; i += blockDim.x) max = fmaxf(max, value(i));
    max = block_max(max);
    if (max == -INFINITY) {
        for (int64_t i = threadIdx.x; i < ne0; i += blockDim.x) dst_row[i] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < ne0; i += blockDim.x) {
        const float e = expf(value(i) - max);
        dst_row[i] = e;
        sum += e;
    }
    sum = block_sum(sum);
    const float inv_sum = 1.0f / sum;
    for (int64_t i = threadIdx.x; i < ne0; i += blockDim.x) dst_row[i] *= inv_sum;
}

}  // namespace

void launch_rms_norm_f32(const float* x, const Shape4& sx, float eps, const float* w, float* dst,
                         cudaStream_t stream) {
    MF_ASSERT(sx.nb[0] == sizeof(float));
    if (sx.nelements() == 0) return;
    launch_overlapped(rms_norm_kernel, grid_x(sx.nrows()), rms_norm_threads(sx.ne[0]), 0, stream,
                      reinterpret_cast<const char*>(x), sx, eps, w, dst);
    CUDA_CHECK_LAUNCH();
}

void launch_rope_f32(const float* x, const Shape4& sx, const int32_t* pos, bool pos_ready, const float* factors,
                     int n_dims, bool neox, float freq_base, float freq_scale, float* dst, cudaStream_t stream) {
    MF_ASSERT(sx.nb[0] == sizeof(float));
    MF_ASSERT(n_dims > 0 && n_dims % 2 == 0 && n_dims <= sx.ne[0]);
    if (sx.nelements() == 0) return;
    launch_overlapped(rope_kernel, grid_x(sx.nrows()), row_block_size(sx.ne[0] / 2, 256), 0, stream,
                      reinterpret_cast<const char*>(x), sx, pos, pos_ready, factors, n_dims, neox, double(freq_base),
                      double(freq_scale), dst);
    CUDA_CHECK_LAUNCH();
}

void launch_soft_max_f32(const float* x, const Shape4& sx, const float* mask, const Shape4& sm, float scale,
                         float* dst, cudaStream_t stream) {
    MF_ASSERT(sx.nb[0] == sizeof(float));
    if (mask) {
        MF_ASSERT(sm.nb[0] == sizeof(float) && sm.ne[0] == sx.ne[0] && sm.ne[1] >= sx.ne[1]);
        MF_ASSERT(sm.ne[2] > 0 && sm.ne[3] > 0 && sx.ne[2] % sm.ne[2] == 0 && sx.ne[3] % sm.ne[3] == 0);
    }
    if (sx.nelements() == 0) return;
    launch_overlapped(soft_max_kernel, grid_x(sx.nrows()), row_block_size(sx.ne[0], 512), 0, stream,
                      reinterpret_cast<const char*>(x), sx, reinterpret_cast<const char*>(mask), sm, scale, dst);
    CUDA_CHECK_LAUNCH();
}

}  // namespace mf
