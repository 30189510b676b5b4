// Internal to the CPU backend: the per-backend execution context (thread pool, scratch memory) and
// the kernel entry points of each op family, with the row/element helpers they share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "core/cpu/threadpool.h"
#include "core/tensor.h"

namespace mf {

// A 64-byte aligned host allocation that only grows; contents are not preserved across growth.
class ScratchBuffer {
public:
    void* get(size_t bytes);

private:
    struct FreeDeleter {
        void operator()(void* p) const { std::free(p); }
    };
    std::unique_ptr<void, FreeDeleter> data_;
    size_t size_ = 0;
};

// What a kernel gets besides its node: the pool to spread rows over and scratch that outlives calls,
// so per-token ops do not allocate.
class CpuContext {
public:
    explicit CpuContext(int n_threads) : pool(n_threads) {}

    ThreadPool pool;

    // One block shared by all threads of the current op (e.g. mul_mat's converted activations).
    void* shared_scratch(size_t bytes) { return shared_.get(bytes); }
    // Makes per_thread_scratch(t) hold at least bytes for every thread; call before parallel_for.
    void reserve_per_thread(size_t bytes);
    // This thread's block, 64-byte aligned; valid until the next reserve_per_thread.
    char* per_thread_scratch(int thread) const { return per_thread_base_ + size_t(thread) * per_thread_stride_; }

private:
    ScratchBuffer shared_;
    ScratchBuffer per_thread_;
    char* per_thread_base_ = nullptr;
    size_t per_thread_stride_ = 0;
};

// ---- kernels: each computes one node whose supports_* check passed --------------------------------
// ops_matmul.cpp
bool supports_mul_mat(const Tensor* dst);
void compute_mul_mat(CpuContext& ctx, Tensor* dst);
// VecDot4Fn's act_d for the four activation rows a, a + stride, ... of K values in type vt: Q8_0's or
// Q8_1's block scales as floats (in a buffer of the calling thread's, valid until its next call), else
// null.
const float* act_scales4(DType vt, const char* a, size_t stride, int64_t K);
// ops_elementwise.cpp: ADD, MUL, SCALE, SILU, GELU, SWIGLU, GEGLU, CONCAT
bool supports_elementwise(const Tensor* dst);
void compute_elementwise(CpuContext& ctx, Tensor* dst);
// ops_norm_rope.cpp: RMS_NORM, ROPE, SOFT_MAX
bool supports_norm_rope(const Tensor* dst);
void compute_norm_rope(CpuContext& ctx, Tensor* dst);
// ops_attention.cpp: FLASH_ATTN, ATTN_FUSED, HADAMARD
bool supports_attention(const Tensor* dst);
void compute_attention(CpuContext& ctx, Tensor* dst);
// ops_rows.cpp: GET_ROWS, CPY
bool supports_rows(const Tensor* dst);
void compute_rows(CpuContext& ctx, Tensor* dst);
// ops_moe.cpp: MUL_MAT_ID, TOP_K, SUM_ROWS, DIV, SIGMOID
bool supports_moe(const Tensor* dst);
void compute_moe(CpuContext& ctx, Tensor* dst);

// ---- helpers shared by the op families (ops_rows.cpp) --------------------------------------------
// A row of `type` with element (or block) stride nb0 can be read as f32 / written from f32:
// f32, f16 and bf16 at any stride; block types with packed rows and a to_float / from_float.
bool row_loadable(DType type, size_t nb0);
bool row_storable(DType type, size_t nb0);
// Converts n elements of a row starting at `row` (element stride nb0) to f32 in out.
void load_row_f32(DType type, const char* row, size_t nb0, int64_t n, float* out);
// Converts n f32 values into a row of `type` (element stride nb0).
void store_row_f32(DType type, const float* in, char* row, size_t nb0, int64_t n);

// Address of element (i0, i1, i2, i3) of a scalar-typed tensor, or of row (i1, i2, i3) when i0 = 0.
inline char* tensor_at(const Tensor* t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return static_cast<char*>(t->data) + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
}

// Rows per pool chunk for row-wise ops with rows of ne0 elements: a chunk gets at least ~8K elements,
// since below that handing it to another thread costs more than the few microseconds of work.
inline int64_t min_rows_per_chunk(int64_t ne0) { return ne0 >= 8192 ? 1 : 8192 / (ne0 > 0 ? ne0 : 1); }

// Splits a row index r in [0, ne1 * ne2 * ne3) into (i1, i2, i3), i1 fastest.
inline void unravel_row(const int64_t* ne, int64_t r, int64_t* i1, int64_t* i2, int64_t* i3) {
    *i1 = r % ne[1];
    r /= ne[1];
    *i2 = r % ne[2];
    *i3 = r / ne[2];
}

}  // namespace mf
