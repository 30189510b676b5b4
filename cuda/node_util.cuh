// Host-side facts about graph tensors that the CUDA backend's dispatch (cuda/cuda_backend.cu) and its
// supports_op table (cuda/supports.cu) share.
#pragma once

#include <cstddef>

#include "core/tensor.h"
#include "cuda/common.cuh"

namespace mf {

inline Shape4 shape_of(const Tensor* t) {
    Shape4 s;
    for (int i = 0; i < MAX_DIMS; ++i) {
        s.ne[i] = t->ne[i];
        s.nb[i] = int64_t(t->nb[i]);
    }
    return s;
}

inline bool is_f32(const Tensor* t) { return t && t->type == DType::F32; }
inline bool is_float(const Tensor* t) {
    return t && (t->type == DType::F32 || t->type == DType::F16 || t->type == DType::BF16);
}
// Row elements are packed (nb[0] is one element or block); dims 1..3 may be strided.
inline bool packed_rows(const Tensor* t) { return t->rows_contiguous(); }
// Block types with a matvec kernel and a GET_ROWS dequantizer.
inline bool is_quant_weight(DType t) {
    switch (t) {
        case DType::Q8_0:
        case DType::Q4_0:
        case DType::Q4_1:
        case DType::Q5_0:
        case DType::Q5_1:
        case DType::Q4_K:
        case DType::Q5_K:
        case DType::Q6_K: return true;
        default: return false;
    }
}
inline bool is_weight_type(DType t) {
    return t == DType::F32 || t == DType::F16 || t == DType::BF16 || is_quant_weight(t);
}

// The CUDA backend's supports_op: whether its kernels cover this node (types, shapes, strides).
// smem_optin: the shared memory a block may opt in to on the device (bounds ATTN_FUSED's span).
bool cuda_supports_node(const Tensor* node, size_t smem_optin);

}  // namespace mf
