// The CUDA backend's supports_op table: exactly the nodes its kernels cover (types, shapes, strides),
// so compute_graph can refuse a graph up front instead of a kernel failing on it.
#include "cuda/node_util.cuh"

#include "core/common.h"
#include "core/ops.h"
#include "cuda/attention.cuh"
#include "cuda/moe.cuh"

namespace mf {

namespace {

bool supports_mul_mat(const Tensor* node) {
    const Tensor* w = node->src[0];
    const Tensor* x = node->src[1];
    if (!w || !x || !is_weight_type(w->type) || !is_f32(x) || !is_f32(node)) return false;
    if (!packed_rows(w) || x->nb[0] != sizeof(float) || !node->is_contiguous()) return false;
    if (w->ne[0] != x->ne[0] || w->ne[0] % dtype_traits(w->type).block_size != 0) return false;
    if (w->ne[2] == 0 || w->ne[3] == 0 || x->ne[2] % w->ne[2] != 0 || x->ne[3] % w->ne[3] != 0) return false;
    return node->ne[0] == w->ne[1] && node->ne[1] == x->ne[1] && node->ne[2] == x->ne[2] && node->ne[3] == x->ne[3];
}

bool supports_mul_mat_id(const Tensor* node) {
    const Tensor* w = node->src[0];
    const Tensor* x = node->src[1];
    const Tensor* ids = node->src[2];
    if (!w || !mul_mat_id_supported(w->type) || !is_f32(x) || !ids || ids->type != DType::I32 || !is_f32(node))
        return false;
    if (!packed_rows(w) || x->nb[0] != sizeof(float) || !node->is_contiguous()) return false;
    if (w->ne[0] != x->ne[0] || w->ne[0] % dtype_traits(w->type).block_size != 0) return false;
    const int64_t n_used = ids->ne[0], T = ids->ne[1];
    if (w->ne[3] != 1 || x->ne[3] != 1 || ids->ne[2] != 1 || ids->ne[3] != 1) return false;
    if ((x->ne[1] != 1 && x->ne[1] != n_used) || x->ne[2] != T) return false;
    if (const Tensor* wts = node->src[3]) {
        const int32_t gate = node->op_param_i(0);
        if (gate != int32_t(MoeGate::SLOTS) && gate != int32_t(MoeGate::SOFTMAX)) return false;
        const int64_t per_token = gate == int32_t(MoeGate::SLOTS) ? n_used : w->ne[2];
        return is_f32(wts) && n_used <= MUL_MAT_ID_MAX_SLOTS && wts->ne[0] == per_token && wts->ne[1] == T &&
               node->ne[0] == w->ne[1] && node->ne[1] == T && node->ne[2] == 1 && node->ne[3] == 1;
    }
    return node->ne[0] == w->ne[1] && node->ne[1] == n_used && node->ne[2] == T && node->ne[3] == 1;
}

bool supports_top_k(const Tensor* node) {
    const Tensor* a = node->src[0];
    const int64_t k = node->op_param_i(0);
    if (!is_f32(a) || node->type != DType::I32 || !node->is_contiguous() || k < 1 || k > a->ne[0]) return false;
    return node->ne[0] == k && node->ne[1] == a->ne[1] && node->ne[2] == a->ne[2] && node->ne[3] == a->ne[3];
}

bool supports_get_rows(const Tensor* node) {
    const Tensor* a = node->src[0];
    const Tensor* ids = node->src[1];
    if (!a || !ids || !is_weight_type(a->type) || ids->type != DType::I32) return false;
    if (!packed_rows(a) || !is_f32(node) || !node->is_contiguous()) return false;
    return node->ne[0] == a->ne[0] && node->ne[1] == ids->ne[0] && node->ne[2] == ids->ne[1] &&
           node->ne[3] == ids->ne[2] && ids->ne[3] == 1 && a->ne[2] == ids->ne[1] && a->ne[3] == ids->ne[2];
}

bool supports_cpy(const Tensor* node) {
    const Tensor* a = node->src[0];
    if (!a || a->nelements() != node->nelements()) return false;
    if (is_float(a) && is_float(node)) return true;  // any strides on both sides
    if (is_f32(a) && (node->type == DType::Q8_0 || node->type == DType::Q4_0))
        return packed_rows(node) && node->ne[0] % QK == 0;
    if ((a->type == DType::Q8_0 || a->type == DType::Q4_0) && is_f32(node))  // naive attention's V
        return packed_rows(a) && a->ne[0] % QK == 0;
    return false;
}

bool supports_rope(const Tensor* node) {
    const Tensor* a = node->src[0];
    const Tensor* pos = node->src[1];
    if (!is_f32(a) || !is_f32(node) || !same_shape(a, node) || !node->is_contiguous()) return false;
    if (a->nb[0] != sizeof(float) || !pos || pos->type != DType::I32 || !pos->is_contiguous()) return false;
    if (pos->ne[0] != a->ne[2] || pos->ne[1] != 1 || pos->ne[2] != 1 || pos->ne[3] != 1) return false;
    const int n_dims = node->op_param_i(0);
    const int mode = node->op_param_i(1);
    const Tensor* factors = node->src[2];
    if (factors && (!is_f32(factors) || !factors->is_contiguous() || factors->ne[0] < n_dims / 2)) return false;
    return n_dims > 0 && n_dims % 2 == 0 && n_dims <= a->ne[0] && (mode == ROPE_NORMAL || mode == ROPE_NEOX);
}

bool supports_soft_max(const Tensor* node) {
    const Tensor* a = node->src[0];
    const Tensor* mask = node->src[1];
    if (!is_f32(a) || !is_f32(node) || !same_shape(a, node) || !node->is_contiguous()) return false;
    if (a->nb[0] != sizeof(float)) return false;
    if (!mask) return true;
    return is_f32(mask) && mask->nb[0] == sizeof(float) && mask->ne[0] == a->ne[0] && mask->ne[1] >= a->ne[1] &&
           mask->ne[2] > 0 && mask->ne[3] > 0 && a->ne[2] % mask->ne[2] == 0 && a->ne[3] % mask->ne[3] == 0;
}

bool supports_concat(const Tensor* node) {
    const Tensor* a = node->src[0];
    const Tensor* b = node->src[1];
    if (!is_f32(a) || !is_f32(b) || !is_f32(node) || !node->is_contiguous()) return false;
    const int dim = node->op_param_i(0);
    if (dim < 0 || dim >= MAX_DIMS) return false;
    for (int i = 0; i < MAX_DIMS; ++i) {
        const int64_t want = i == dim ? a->ne[i] + b->ne[i] : a->ne[i];
        if (node->ne[i] != want || (i != dim && a->ne[i] != b->ne[i])) return false;
    }
    return true;
}

bool supports_set_rows(const Tensor* node) {
    const Tensor* src = node->src[1];
    const Tensor* ids = node->src[2];
    const DType t = node->type;
    const bool quant = t == DType::Q8_0 || t == DType::Q4_0;  // quantized KV cache rows
    if (t != DType::F32 && t != DType::F16 && t != DType::BF16 && !quant) return false;
    if (quant && (!packed_rows(node) || node->ne[0] % QK != 0 || src->nb[0] != sizeof(float))) return false;
    if (!is_f32(src) || !ids || ids->type != DType::I32 || !ids->is_contiguous()) return false;
    return node->ne[2] == 1 && node->ne[3] == 1 && src->ne[2] == 1 && src->ne[3] == 1 && src->ne[0] == node->ne[0] &&
           ids->ne[0] == src->ne[1];
}

bool supports_flash_attn(const Tensor* node) {
    const Tensor* q = node->src[0];
    const Tensor* k = node->src[1];
    const Tensor* v = node->src[2];
    const Tensor* mask = node->src[3];
    if (!is_f32(q) || !is_f32(mask) || !is_f32(node) || !node->is_contiguous()) return false;
    if (q->nb[0] != sizeof(float) || mask->nb[0] != sizeof(float)) return false;
    if (k->nb[0] != dtype_traits(k->type).type_size || v->nb[0] != dtype_traits(v->type).type_size) return false;
    const Tensor* tail = node->src[4];
    // With a tail V must be K's rows (a latent's prefix): the kernels read them through one pointer.
    auto base = [](const Tensor* t) { return t->view_src ? t->view_src : t; };
    if (tail && (tail->type != DType::F16 || tail->nb[0] != sizeof(uint16_t) || base(v) != base(k) ||
                 v->view_offs != k->view_offs || v->nb[1] != k->nb[1] || v->nb[2] != k->nb[2]))
        return false;
    return flash_attn_supported(k->type, v->type, attention_key_width(node), v->ne[0], tail ? tail->ne[0] : 0);
}

}  // namespace

bool cuda_supports_node(const Tensor* node, size_t smem_optin) {
    const Tensor* a = node->src[0];
    const Tensor* b = node->src[1];
    switch (node->op) {
        case Op::NONE:
        case Op::VIEW: return true;
        case Op::MUL_MAT: return supports_mul_mat(node);
        case Op::GET_ROWS: return supports_get_rows(node);
        case Op::CPY: return supports_cpy(node);
        case Op::SET_ROWS: return supports_set_rows(node);
        case Op::ROPE: return supports_rope(node);
        case Op::SOFT_MAX: return supports_soft_max(node);
        case Op::FLASH_ATTN: return supports_flash_attn(node);
        case Op::ATTN_FUSED:
            return supports_flash_attn(node) &&
                   attn_fused_supported(node->src[1]->type, node->src[2]->type, attention_key_width(node),
                                        node->src[2]->ne[0], node->src[1]->ne[1], smem_optin,
                                        node->src[4] ? node->src[4]->ne[0] : 0);
        case Op::HADAMARD:
            return is_f32(a) && is_f32(node) && same_shape(a, node) && a->is_contiguous() && node->is_contiguous() &&
                   a->ne[0] >= 2 && a->ne[0] <= 1024 && (a->ne[0] & (a->ne[0] - 1)) == 0;
        case Op::CONCAT: return supports_concat(node);
        case Op::MUL_MAT_ID: return supports_mul_mat_id(node);
        case Op::TOP_K: return supports_top_k(node);
        case Op::SUM_ROWS:
            return is_f32(a) && is_f32(node) && node->is_contiguous() && node->ne[0] == 1 && node->ne[1] == a->ne[1] &&
                   node->ne[2] == a->ne[2] && node->ne[3] == a->ne[3];
        case Op::SIGMOID: return is_f32(a) && is_f32(node) && same_shape(a, node) && node->is_contiguous();
        case Op::RMS_NORM:
            return is_f32(a) && is_f32(node) && same_shape(a, node) && a->nb[0] == sizeof(float) &&
                   node->is_contiguous();
        case Op::SCALE:
        case Op::SILU:
        case Op::GELU: return is_f32(a) && is_f32(node) && same_shape(a, node) && node->is_contiguous();
        case Op::ADD:
        case Op::MUL:
        case Op::DIV:
            if (!is_f32(a) || !is_f32(b) || !is_f32(node) || !same_shape(a, node) || !node->is_contiguous())
                return false;
            for (int i = 0; i < MAX_DIMS; ++i)
                if (b->ne[i] == 0 || a->ne[i] % b->ne[i] != 0) return false;
            return true;
        case Op::SWIGLU:
        case Op::GEGLU:
            return is_f32(a) && is_f32(b) && is_f32(node) && same_shape(a, node) && same_shape(b, node) &&
                   node->is_contiguous();
        case Op::COUNT: break;
    }
    return false;
}

}  // namespace mf
