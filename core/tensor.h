// Tensors and the context that owns them: ne/nb shapes, views, and the op a tensor was made by.
// A tensor made by an op holds no data until a backend allocates and computes its graph.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>

#include "core/dtype.h"

namespace mf {

constexpr int MAX_DIMS = 4;
constexpr int MAX_SRC = 5;
constexpr int MAX_OP_PARAMS = 8;

// Op semantics (shapes use ggml order: ne[0] is the fastest-varying dimension):
enum class Op : uint8_t {
    NONE,       // a leaf: weight or input, data set from outside
    GET_ROWS,   // src0 [ne0, n_rows, B2, B3] any computable type, src1 I32 [n, B2, B3] -> f32 [ne0, n, B2, B3]
    MUL_MAT,    // src0 [K, M, B2, B3] weights (rows contiguous), src1 f32 [K, N, C2, C3]
                //   (C2 % B2 == 0, C3 % B3 == 0: src0 broadcast) -> f32 [M, N, C2, C3] = src0 rows . src1 rows
    ADD,        // f32 src0 + src1, src1 broadcast over src0 (src0.ne[i] % src1.ne[i] == 0)
    MUL,        // f32 src0 * src1, broadcast as ADD
    SCALE,      // f32 src0 * p0 (float)
    RMS_NORM,   // f32 src0 / sqrt(mean(src0^2 over ne0) + eps), eps = p0 (float)
    ROPE,       // f32 src0 [head_dim, n_head, n_tokens], src1 I32 positions [n_tokens], src2 optional f32
                //   frequency factors [n_dims / 2] (Llama 3.1 rope scaling: pair i's angle is divided by
                //   src2[i]); p0 n_dims (int), p1 mode (int, ROPE_NORMAL|ROPE_NEOX), p2 freq_base,
                //   p3 freq_scale (floats): angle_i = pos * freq_scale * freq_base^(-2i / n_dims) / src2[i]
    SOFT_MAX,   // f32 softmax over ne0 of (src0 * p0 + src1), src1 optional mask f32 [ne0, >=ne1] broadcast
                //   over dims 2 and 3 (-INFINITY masks out)
    SILU,       // f32 x * sigmoid(x)
    GELU,       // f32 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), the tanh form ggml uses
    SWIGLU,     // f32 silu(src0) * src1, same shapes
    GEGLU,      // f32 gelu(src0) * src1, same shapes
    CPY,        // convert src0 into this tensor's type and shape order (same element count). When made by
                //   cpy(a, b) the result is a view of b (writes into b); when made by cast() it is new memory
    CONCAT,     // f32 src0 and src1 joined along dimension p0 (int); other dims equal
    SET_ROWS,   // writes f32 src1 [ne0, n] row i, converted, into row src2[i] (I32 [n]) of src0 [ne0, R]
                //   (2-D). The result is a view of src0: the write position is data, not graph shape,
                //   so a KV-cache store at a moving position keeps one graph across decode steps
    FLASH_ATTN, // attention over a KV cache with an online softmax (no materialized scores):
                //   src0 q f32 [hd_k, n_head, T]; src1 k [hd_k, n_kv, n_head_kv] and src2 v [hd_v, n_kv,
                //   n_head_kv] (f32, f16, q8_0 or q4_0; rows strided: views of the cache, one row per
                //   position and head); src3 mask f32 [n_kv, >= T] (-INFINITY masks out); p0 scale (float)
                //   -> f32 [hd_v, n_head, T] = softmax(k . q * scale + mask) . v, where query head h reads
                //   KV head h / (n_head / n_head_kv) (GQA/MQA groups are consecutive query heads).
                //   Optional src4, f16 [hd_r, n_kv, n_head_kv]: the last hd_r values of every K row, kept
                //   apart (a quantized MLA latent's roped part); q is then [hd_k + hd_r, ...]
    ATTN_FUSED, // FLASH_ATTN's sources, parameters and result, computed the plain way: all scores of the span
                //   kept whole (scratch / shared memory), then an exact softmax over them, then the weighted
                //   V sum; no online rescaling. The `--attn fused` backend (models/builders.h AttnImpl)
    MUL_MAT_ID, // expert-indexed MUL_MAT (mixture of experts): src0 experts [K, M, n_expert] (a MUL_MAT weight
                //   type, packed rows), src1 f32 [K, n_b, T] with n_b = n_used or 1, src2 I32 ids [n_used, T]
                //   -> f32 [M, n_used, T], row (u, t) = experts[ids[u, t]] rows . src1[:, n_b == 1 ? 0 : u, t].
                //   Only the selected experts' rows are read; ids must be in [0, n_expert). With src3, f32
                //   weights [n_used, T]: -> f32 [M, T], column t = sum over u (in order) of weights[u, t] times
                //   row (u, t) (a MoE's weighted expert sum in the down projection). p0 (MoeGate) says how src3
                //   gives slot (u, t)'s weight: SLOTS, src3[u, t]; SOFTMAX, src3 router logits [n_expert, T]:
                //   softmax(src3[:, t])[ids[u, t]] * p1 (float), the softmax computed as SOFT_MAX's (on CUDA up to
                //   summation order)
    TOP_K,      // f32 src0 [n, ne1, ne2, ne3] -> I32 [k, ne1, ne2, ne3], k = p0 (int) <= n: per row the
                //   indices of the k largest values, largest first; equal values in index order (a stable
                //   descending sort); NaN sorts below every number
    SUM_ROWS,   // f32 src0 [ne0, ne1, ne2, ne3] (any strides) -> f32 [1, ne1, ne2, ne3]: the sum over ne0
    DIV,        // f32 src0 / src1, broadcast as ADD
    SIGMOID,    // f32 1 / (1 + exp(-x))
    HADAMARD,   // f32 each row x of src0 (ne0 a power of two, rows contiguous) rotated by R = H S, where H
                //   is the orthonormal Sylvester-Hadamard matrix H[i][j] = (-1)^popcount(i & j) / sqrt(ne0)
                //   and S = diag(hadamard_sign(i)) fixed pseudo-random signs: p0 = 0 gives R x = H (S x),
                //   p0 = 1 the inverse R^T x = S (H x). The KV cache stores quantized keys/values rotated
                //   by R (outliers, and a mean shared by all channels, spread over every channel)
    VIEW,       // no computation: a window onto view_src (view, reshape, permute, transpose)
    COUNT
};

// How a weighted MUL_MAT_ID's src3 gives each slot's weight (its op param 0).
enum class MoeGate : int32_t { SLOTS = 0, SOFTMAX = 1 };

const char* op_name(Op op);

enum TensorFlags : uint32_t {
    TENSOR_INPUT = 1u << 0,   // set from outside before compute; kept alive for the whole graph
    TENSOR_OUTPUT = 1u << 1,  // read after compute; its memory is never reused within the graph
    TENSOR_PARAM = 1u << 2,   // a weight, allocated once outside the graph arena
    // A node of a chain the model knows to be independent of the nodes around it (a MoE layer's
    // shared experts beside its routing and routed experts): a backend with a second stream may run
    // it there, ordering it against the rest by what each reads and writes. Results are the same.
    TENSOR_SIDE = 1u << 3,
    // A weight the model reads only as MUL_MAT_ID's experts (src0). A backend may keep its rows in a
    // layout of its own for that kernel (the CUDA backend: rows_split, core/quants.h); upload and
    // download still take and give the file's bytes.
    TENSOR_ID_WEIGHT = 1u << 4,
};

enum RopeMode : int32_t { ROPE_NORMAL = 0, ROPE_NEOX = 2 };

class Buffer;

struct Tensor {
    DType type = DType::F32;
    int64_t ne[MAX_DIMS] = {1, 1, 1, 1};  // elements per dimension
    size_t nb[MAX_DIMS] = {0, 0, 0, 0};   // byte stride per dimension (nb[0] = block bytes for quantized rows)
    Op op = Op::NONE;
    int32_t op_params[MAX_OP_PARAMS] = {};  // op-specific; floats stored bit-cast (see op_param_f)
    Tensor* src[MAX_SRC] = {};
    Tensor* view_src = nullptr;  // set for views and cpy(a, b): memory belongs to view_src
    size_t view_offs = 0;        // byte offset into view_src
    void* data = nullptr;        // in the owning backend's address space; null until allocated
    Buffer* buffer = nullptr;    // the buffer that holds data
    uint32_t flags = 0;
    std::string name;

    int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
    int64_t nrows() const { return ne[1] * ne[2] * ne[3]; }
    // Bytes spanned by the tensor's elements (the allocation size of a contiguous tensor).
    size_t nbytes() const;
    bool is_contiguous() const;
    // Rows are packed (nb[0] is one block) even if dims 1..3 are strided.
    bool rows_contiguous() const;
    float op_param_f(int i) const;
    int32_t op_param_i(int i) const { return op_params[i]; }
};

// Owns every tensor made through it; pointers stay valid for the context's lifetime.
class Context {
public:
    Context() = default;
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    // A fresh contiguous leaf tensor with no data. ne has n_dims entries (1..4).
    Tensor* new_tensor(DType type, int n_dims, const int64_t* ne);
    Tensor* new_tensor_1d(DType type, int64_t ne0);
    Tensor* new_tensor_2d(DType type, int64_t ne0, int64_t ne1);
    Tensor* new_tensor_3d(DType type, int64_t ne0, int64_t ne1, int64_t ne2);
    Tensor* new_tensor_4d(DType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);

    // The tensors in creation order.
    const std::deque<Tensor>& tensors() const { return tensors_; }
    std::deque<Tensor>& tensors() { return tensors_; }
    // Finds a tensor by name, or null.
    Tensor* find(const std::string& name);

private:
    std::deque<Tensor> tensors_;
};

// Fills nb[] for a contiguous layout of t->type and t->ne.
void set_contiguous_strides(Tensor* t);
// "name f32 [4096, 32, 1, 1]", for error messages.
std::string describe(const Tensor* t);
// Two tensors have identical ne.
bool same_shape(const Tensor* a, const Tensor* b);

}  // namespace mf
