// Op constructors: shape checks and node recording. The arithmetic lives in the backends.
#include "core/ops.h"

#include <cstring>

#include "core/common.h"

namespace mf {

// A new node of the given op, contiguous, with no data.
Tensor* new_node(Context& ctx, Op op, DType type, const int64_t* ne) {
    Tensor* t = ctx.new_tensor(type, MAX_DIMS, ne);
    t->op = op;
    return t;
}

namespace {

void set_param_f(Tensor* t, int i, float f) { std::memcpy(&t->op_params[i], &f, sizeof f); }

Tensor* unary(Context& ctx, Op op, Tensor* a) {
    MF_ASSERT(a->type == DType::F32);
    Tensor* t = new_node(ctx, op, DType::F32, a->ne);
    t->src[0] = a;
    return t;
}

bool can_broadcast(const Tensor* a, const Tensor* b) {
    for (int i = 0; i < MAX_DIMS; ++i)
        if (b->ne[i] == 0 || a->ne[i] % b->ne[i] != 0) return false;
    return true;
}

Tensor* binary(Context& ctx, Op op, Tensor* a, Tensor* b) {
    MF_ASSERT(a->type == DType::F32 && b->type == DType::F32);
    MF_ASSERT_MSG(can_broadcast(a, b), "second operand must broadcast to the first");
    Tensor* t = new_node(ctx, op, DType::F32, a->ne);
    t->src[0] = a;
    t->src[1] = b;
    return t;
}

Tensor* gated(Context& ctx, Op op, Tensor* a, Tensor* b) {
    MF_ASSERT(a->type == DType::F32 && b->type == DType::F32);
    MF_ASSERT(same_shape(a, b));
    Tensor* t = new_node(ctx, op, DType::F32, a->ne);
    t->src[0] = a;
    t->src[1] = b;
    return t;
}

Tensor* make_view(Context& ctx, Tensor* a, const int64_t* ne, const size_t* nb, size_t offset) {
    Tensor* t = new_node(ctx, Op::VIEW, a->type, ne);
    if (nb[0]) t->nb[0] = nb[0];  // 0: packed rows
    for (int i = 1; i < MAX_DIMS; ++i) t->nb[i] = nb[i];
    t->src[0] = a;
    // Views of views point at the memory's owner directly.
    t->view_src = a->view_src ? a->view_src : a;
    t->view_offs = (a->view_src ? a->view_offs : 0) + offset;
    MF_ASSERT_MSG(t->view_offs + t->nbytes() <= t->view_src->nbytes(), "view exceeds its source");
    return t;
}

}  // namespace

Tensor* get_rows(Context& ctx, Tensor* a, Tensor* ids) {
    MF_ASSERT(ids->type == DType::I32);
    MF_ASSERT(a->ne[2] == ids->ne[1] && a->ne[3] == ids->ne[2]);
    MF_ASSERT(dtype_traits(a->type).to_float || a->type == DType::F32);
    const int64_t ne[4] = {a->ne[0], ids->ne[0], ids->ne[1], ids->ne[2]};
    Tensor* t = new_node(ctx, Op::GET_ROWS, DType::F32, ne);
    t->src[0] = a;
    t->src[1] = ids;
    return t;
}

Tensor* mul_mat(Context& ctx, Tensor* a, Tensor* b) {
    MF_ASSERT_MSG(a->ne[0] == b->ne[0], "mul_mat: inner dimensions differ");
    MF_ASSERT(b->type == DType::F32);
    MF_ASSERT(b->ne[2] % a->ne[2] == 0 && b->ne[3] % a->ne[3] == 0);
    MF_ASSERT_MSG(a->rows_contiguous(), "mul_mat: weight rows must be contiguous");
    MF_ASSERT(dtype_traits(a->type).computable);
    const int64_t ne[4] = {a->ne[1], b->ne[1], b->ne[2], b->ne[3]};
    Tensor* t = new_node(ctx, Op::MUL_MAT, DType::F32, ne);
    t->src[0] = a;
    t->src[1] = b;
    return t;
}

Tensor* add(Context& ctx, Tensor* a, Tensor* b) { return binary(ctx, Op::ADD, a, b); }
Tensor* mul(Context& ctx, Tensor* a, Tensor* b) { return binary(ctx, Op::MUL, a, b); }

Tensor* scale(Context& ctx, Tensor* a, float s) {
    Tensor* t = unary(ctx, Op::SCALE, a);
    set_param_f(t, 0, s);
    return t;
}

Tensor* rms_norm(Context& ctx, Tensor* a, float eps) {
    Tensor* t = unary(ctx, Op::RMS_NORM, a);
    set_param_f(t, 0, eps);
    return t;
}

Tensor* rope(Context& ctx, Tensor* a, Tensor* pos, int n_dims, RopeMode mode, float freq_base,
             float freq_scale, Tensor* freq_factors) {
    MF_ASSERT(a->type == DType::F32 && pos->type == DType::I32);
    MF_ASSERT_MSG(pos->ne[0] == a->ne[2], "rope: one position per token");
    MF_ASSERT(n_dims > 0 && n_dims % 2 == 0 && n_dims <= a->ne[0]);
    Tensor* t = unary(ctx, Op::ROPE, a);
    t->src[1] = pos;
    if (freq_factors) {
        MF_ASSERT(freq_factors->type == DType::F32 && freq_factors->ne[0] >= n_dims / 2);
        t->src[2] = freq_factors;
    }
    t->op_params[0] = n_dims;
    t->op_params[1] = mode;
    set_param_f(t, 2, freq_base);
    set_param_f(t, 3, freq_scale);
    return t;
}

Tensor* soft_max(Context& ctx, Tensor* a, Tensor* mask, float s) {
    Tensor* t = unary(ctx, Op::SOFT_MAX, a);
    if (mask) {
        MF_ASSERT(mask->type == DType::F32);
        MF_ASSERT(mask->ne[0] == a->ne[0] && mask->ne[1] >= a->ne[1]);
        t->src[1] = mask;
    }
    set_param_f(t, 0, s);
    return t;
}

Tensor* hadamard(Context& ctx, Tensor* a, bool inverse) {
    MF_ASSERT_MSG(a->ne[0] >= 1 && (a->ne[0] & (a->ne[0] - 1)) == 0, "hadamard: row length is not a power of two");
    Tensor* t = unary(ctx, Op::HADAMARD, a);
    t->op_params[0] = inverse ? 1 : 0;
    return t;
}

namespace {

// FLASH_ATTN and ATTN_FUSED: one contract, two kernels.
Tensor* attention_node(Context& ctx, Op op, Tensor* q, Tensor* k, Tensor* v, Tensor* mask, float scale,
                       Tensor* k_tail) {
    MF_ASSERT(q->type == DType::F32 && mask->type == DType::F32);
    MF_ASSERT_MSG(q->ne[0] == k->ne[0] + (k_tail ? k_tail->ne[0] : 0), "attention: q and k head sizes differ");
    MF_ASSERT_MSG(!k_tail || (k_tail->type == DType::F16 && k_tail->ne[1] == k->ne[1] && k_tail->ne[2] == k->ne[2] &&
                              k_tail->ne[3] == 1),
                  "attention: k_tail must be f16 rows beside k's");
    MF_ASSERT_MSG(k->ne[1] == v->ne[1] && k->ne[2] == v->ne[2], "attention: k and v spans differ");
    MF_ASSERT_MSG(q->ne[1] % k->ne[2] == 0, "attention: query heads are not a multiple of the KV heads");
    MF_ASSERT_MSG(mask->ne[0] == k->ne[1] && mask->ne[1] >= q->ne[2], "attention: mask shape");
    MF_ASSERT(q->ne[3] == 1 && k->ne[3] == 1 && v->ne[3] == 1);
    const int64_t ne[MAX_DIMS] = {v->ne[0], q->ne[1], q->ne[2], 1};
    Tensor* t = new_node(ctx, op, DType::F32, ne);
    t->src[0] = q;
    t->src[1] = k;
    t->src[2] = v;
    t->src[3] = mask;
    t->src[4] = k_tail;
    set_param_f(t, 0, scale);
    return t;
}

}  // namespace

int64_t attention_key_width(const Tensor* node) {
    return node->src[1]->ne[0] + (node->src[4] ? node->src[4]->ne[0] : 0);
}

Tensor* flash_attn(Context& ctx, Tensor* q, Tensor* k, Tensor* v, Tensor* mask, float scale, Tensor* k_tail) {
    return attention_node(ctx, Op::FLASH_ATTN, q, k, v, mask, scale, k_tail);
}

Tensor* attn_fused(Context& ctx, Tensor* q, Tensor* k, Tensor* v, Tensor* mask, float scale, Tensor* k_tail) {
    return attention_node(ctx, Op::ATTN_FUSED, q, k, v, mask, scale, k_tail);
}

Tensor* silu(Context& ctx, Tensor* a) { return unary(ctx, Op::SILU, a); }
Tensor* gelu(Context& ctx, Tensor* a) { return unary(ctx, Op::GELU, a); }
Tensor* swiglu(Context& ctx, Tensor* a, Tensor* b) { return gated(ctx, Op::SWIGLU, a, b); }
Tensor* geglu(Context& ctx, Tensor* a, Tensor* b) { return gated(ctx, Op::GEGLU, a, b); }

Tensor* cpy(Context& ctx, Tensor* a, Tensor* b) {
    MF_ASSERT_MSG(a->nelements() == b->nelements(), "cpy: element counts differ");
    Tensor* t = new_node(ctx, Op::CPY, b->type, b->ne);
    for (int i = 0; i < MAX_DIMS; ++i) t->nb[i] = b->nb[i];
    t->src[0] = a;
    t->src[1] = b;
    t->view_src = b->view_src ? b->view_src : b;
    t->view_offs = b->view_src ? b->view_offs : 0;
    return t;
}

Tensor* cast(Context& ctx, Tensor* a, DType type) {
    MF_ASSERT(a->ne[0] % dtype_traits(type).block_size == 0);
    Tensor* t = new_node(ctx, Op::CPY, type, a->ne);
    t->src[0] = a;
    return t;
}

Tensor* cont(Context& ctx, Tensor* a) { return cast(ctx, a, a->type); }

Tensor* set_rows(Context& ctx, Tensor* dst, Tensor* src, Tensor* ids) {
    MF_ASSERT(src->type == DType::F32 && ids->type == DType::I32);
    MF_ASSERT_MSG(dst->ne[2] == 1 && dst->ne[3] == 1 && src->ne[2] == 1 && src->ne[3] == 1, "set_rows is 2-D");
    MF_ASSERT_MSG(src->ne[0] == dst->ne[0], "set_rows: row lengths differ");
    MF_ASSERT_MSG(ids->ne[0] == src->ne[1] && ids->nelements() == ids->ne[0], "set_rows: one id per source row");
    Tensor* t = new_node(ctx, Op::SET_ROWS, dst->type, dst->ne);
    for (int i = 0; i < MAX_DIMS; ++i) t->nb[i] = dst->nb[i];
    t->src[0] = dst;
    t->src[1] = src;
    t->src[2] = ids;
    t->view_src = dst->view_src ? dst->view_src : dst;
    t->view_offs = dst->view_src ? dst->view_offs : 0;
    return t;
}

Tensor* concat(Context& ctx, Tensor* a, Tensor* b, int dim) {
    MF_ASSERT(dim >= 0 && dim < MAX_DIMS);
    MF_ASSERT(a->type == DType::F32 && b->type == DType::F32);
    int64_t ne[4];
    for (int i = 0; i < MAX_DIMS; ++i) {
        if (i != dim) MF_ASSERT_MSG(a->ne[i] == b->ne[i], "concat: shapes differ off the join dimension");
        ne[i] = i == dim ? a->ne[i] + b->ne[i] : a->ne[i];
    }
    Tensor* t = new_node(ctx, Op::CONCAT, DType::F32, ne);
    t->src[0] = a;
    t->src[1] = b;
    t->op_params[0] = dim;
    return t;
}

namespace {

Tensor* mul_mat_id_node(Context& ctx, Tensor* experts, Tensor* b, Tensor* ids, Tensor* weights, MoeGate gate,
                        float scale) {
    MF_ASSERT(b->type == DType::F32 && ids->type == DType::I32);
    MF_ASSERT_MSG(experts->ne[0] == b->ne[0], "mul_mat_id: inner dimensions differ");
    MF_ASSERT_MSG(experts->ne[3] == 1 && b->ne[3] == 1 && ids->ne[2] == 1 && ids->ne[3] == 1, "mul_mat_id is 3-D");
    MF_ASSERT_MSG(b->ne[1] == 1 || b->ne[1] == ids->ne[0], "mul_mat_id: one activation row per used expert, or one");
    MF_ASSERT_MSG(b->ne[2] == ids->ne[1], "mul_mat_id: one id column per token");
    MF_ASSERT_MSG(experts->rows_contiguous(), "mul_mat_id: weight rows must be contiguous");
    MF_ASSERT(dtype_traits(experts->type).computable);
    if (weights) {
        const int64_t per_token = gate == MoeGate::SLOTS ? ids->ne[0] : experts->ne[2];
        MF_ASSERT_MSG(weights->type == DType::F32 && weights->ne[0] == per_token && weights->ne[1] == ids->ne[1] &&
                          weights->ne[2] == 1 && weights->ne[3] == 1,
                      "mul_mat_id: weights must be f32 [n_used, T], router logits f32 [n_expert, T]");
    }
    const int64_t ne[4] = {experts->ne[1], weights ? ids->ne[1] : ids->ne[0], weights ? 1 : ids->ne[1], 1};
    Tensor* t = new_node(ctx, Op::MUL_MAT_ID, DType::F32, ne);
    t->src[0] = experts;
    t->src[1] = b;
    t->src[2] = ids;
    t->src[3] = weights;
    t->op_params[0] = int32_t(gate);
    set_param_f(t, 1, scale);
    return t;
}

}  // namespace

Tensor* mul_mat_id(Context& ctx, Tensor* experts, Tensor* b, Tensor* ids, Tensor* weights) {
    return mul_mat_id_node(ctx, experts, b, ids, weights, MoeGate::SLOTS, 1.0f);
}

Tensor* mul_mat_id_softmax_gated(Context& ctx, Tensor* experts, Tensor* b, Tensor* ids, Tensor* logits,
                                 float scale) {
    MF_ASSERT(logits);
    return mul_mat_id_node(ctx, experts, b, ids, logits, MoeGate::SOFTMAX, scale);
}

Tensor* top_k(Context& ctx, Tensor* a, int k) {
    MF_ASSERT(a->type == DType::F32);
    MF_ASSERT_MSG(k >= 1 && k <= a->ne[0], "top_k: k must be in 1..ne0");
    const int64_t ne[4] = {k, a->ne[1], a->ne[2], a->ne[3]};
    Tensor* t = new_node(ctx, Op::TOP_K, DType::I32, ne);
    t->src[0] = a;
    t->op_params[0] = k;
    return t;
}

Tensor* sum_rows(Context& ctx, Tensor* a) {
    MF_ASSERT(a->type == DType::F32);
    const int64_t ne[4] = {1, a->ne[1], a->ne[2], a->ne[3]};
    Tensor* t = new_node(ctx, Op::SUM_ROWS, DType::F32, ne);
    t->src[0] = a;
    return t;
}

Tensor* div(Context& ctx, Tensor* a, Tensor* b) { return binary(ctx, Op::DIV, a, b); }
Tensor* sigmoid(Context& ctx, Tensor* a) { return unary(ctx, Op::SIGMOID, a); }

Tensor* view_1d(Context& ctx, Tensor* a, int64_t ne0, size_t offset) {
    const int64_t ne[4] = {ne0, 1, 1, 1};
    size_t nb[4] = {0, 0, 0, 0};
    nb[1] = dtype_row_size(a->type, ne0);
    nb[2] = nb[3] = nb[1];
    return make_view(ctx, a, ne, nb, offset);
}

Tensor* view_2d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, size_t nb1, size_t offset) {
    const int64_t ne[4] = {ne0, ne1, 1, 1};
    const size_t nb[4] = {0, nb1, nb1 * size_t(ne1), nb1 * size_t(ne1)};
    return make_view(ctx, a, ne, nb, offset);
}

Tensor* view_3d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, size_t nb1, size_t nb2,
                size_t offset) {
    const int64_t ne[4] = {ne0, ne1, ne2, 1};
    const size_t nb[4] = {0, nb1, nb2, nb2 * size_t(ne2)};
    return make_view(ctx, a, ne, nb, offset);
}

Tensor* view_4d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3, size_t nb1,
                size_t nb2, size_t nb3, size_t offset) {
    const int64_t ne[4] = {ne0, ne1, ne2, ne3};
    const size_t nb[4] = {0, nb1, nb2, nb3};
    return make_view(ctx, a, ne, nb, offset);
}

Tensor* reshape_4d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    MF_ASSERT_MSG(a->is_contiguous(), "reshape needs a contiguous tensor");
    MF_ASSERT(ne0 * ne1 * ne2 * ne3 == a->nelements());
    Tensor shape;
    shape.type = a->type;
    shape.ne[0] = ne0, shape.ne[1] = ne1, shape.ne[2] = ne2, shape.ne[3] = ne3;
    set_contiguous_strides(&shape);
    return make_view(ctx, a, shape.ne, shape.nb, 0);
}

Tensor* reshape_2d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1) { return reshape_4d(ctx, a, ne0, ne1, 1, 1); }
Tensor* reshape_3d(Context& ctx, Tensor* a, int64_t ne0, int64_t ne1, int64_t ne2) {
    return reshape_4d(ctx, a, ne0, ne1, ne2, 1);
}

Tensor* permute(Context& ctx, Tensor* a, int axis0, int axis1, int axis2, int axis3) {
    const int axes[4] = {axis0, axis1, axis2, axis3};
    int seen = 0;
    for (int ax : axes) {
        MF_ASSERT(ax >= 0 && ax < MAX_DIMS);
        seen |= 1 << ax;
    }
    MF_ASSERT_MSG(seen == 0xF, "permute: axes must be a permutation of 0..3");
    int64_t ne[4];
    size_t nb[4];
    for (int i = 0; i < MAX_DIMS; ++i) {
        ne[axes[i]] = a->ne[i];
        nb[axes[i]] = a->nb[i];
    }
    MF_ASSERT_MSG(!dtype_traits(a->type).is_quantized || axes[0] == 0, "cannot permute the block dimension");
    return make_view(ctx, a, ne, nb, 0);
}

Tensor* transpose(Context& ctx, Tensor* a) { return permute(ctx, a, 1, 0, 2, 3); }

}  // namespace mf
