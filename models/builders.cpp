// Shared graph builders. Attention is written with plain ops (K^T Q, masked softmax, V P) over the
// cache; the fused and flash kernels of later issues replace this subgraph without changing callers.
#include "models/builders.h"

#include <cmath>

#include "core/common.h"

namespace mf {

Tensor* build_forward_llama(ForwardState& s);

Tensor* ForwardState::v_slots_for(int64_t channels) {
    Tensor*& t = v_slots[channels];
    if (!t) {
        t = ctx.new_tensor_1d(DType::I32, channels * n_tokens);
        t->flags |= TENSOR_INPUT;
        t->name = "v_slots";
    }
    return t;
}

Tensor* build_norm(ForwardState& s, Tensor* x, Tensor* weight, float eps) {
    return mul(s.ctx, rms_norm(s.ctx, x, eps), weight);
}

Tensor* build_linear(ForwardState& s, Tensor* x, Tensor* w, Tensor* b) {
    Tensor* y = mul_mat(s.ctx, w, x);
    return b ? add(s.ctx, y, b) : y;
}

Tensor* build_attn(ForwardState& s, uint32_t il, Tensor* q, Tensor* k, Tensor* v) {
    Context& ctx = s.ctx;
    const HParams& hp = s.model.hp;
    const int64_t hd_k = hp.head_dim_k, hd_v = hp.head_dim_v;
    const int64_t n_head = hp.n_head, n_head_kv = hp.n_head_kv[il];
    const int64_t T = s.n_tokens, n_kv = s.n_kv;
    Tensor* kc = s.kv.k[il];
    Tensor* vc = s.kv.v[il];

    // Store the new keys (a row per position) and values (transposed: a row per channel, so each value
    // is its own one-element row). Positions are data, so decode steps share one graph.
    graph_expand(s.graph, set_rows(ctx, kc, reshape_2d(ctx, k, hd_k * n_head_kv, T), s.positions));
    const int64_t channels = hd_v * n_head_kv;
    Tensor* v_elems = reshape_2d(ctx, cont(ctx, transpose(ctx, v)), 1, channels * T);
    graph_expand(s.graph, set_rows(ctx, reshape_2d(ctx, vc, 1, vc->nelements()), v_elems, s.v_slots_for(channels)));

    // All cached positions, per KV head: K [hd_k, n_kv, n_head_kv], V [n_kv, hd_v, n_head_kv].
    Tensor* K = view_3d(ctx, kc, hd_k, n_kv, n_head_kv, kc->nb[1], size_t(hd_k) * kc->nb[0], 0);
    Tensor* V = view_3d(ctx, vc, n_kv, hd_v, n_head_kv, vc->nb[1], size_t(hd_v) * vc->nb[1], 0);

    // Query heads are grouped consecutively per KV head; mul_mat broadcasts K and V over each group.
    Tensor* Q = permute(ctx, q, 0, 2, 1, 3);                        // [hd_k, T, n_head]
    Tensor* kq = mul_mat(ctx, K, Q);                                 // [n_kv, T, n_head]
    kq = soft_max(ctx, kq, s.kq_mask, 1.0f / std::sqrt(float(hd_k)));
    Tensor* kqv = mul_mat(ctx, V, kq);                               // [hd_v, T, n_head]
    Tensor* o = cont(ctx, permute(ctx, kqv, 0, 2, 1, 3));            // [hd_v, n_head, T]
    return reshape_2d(ctx, o, hd_v * n_head, T);
}

Tensor* build_ffn_swiglu(ForwardState& s, Tensor* x, Tensor* gate, Tensor* up, Tensor* down) {
    Tensor* g = mul_mat(s.ctx, gate, x);
    Tensor* u = mul_mat(s.ctx, up, x);
    return mul_mat(s.ctx, down, swiglu(s.ctx, g, u));
}

Tensor* build_output(ForwardState& s, Tensor* x, Tensor* norm, float eps) {
    // Picking the next token needs only the last token's logits.
    if (!s.all_logits) x = view_2d(s.ctx, x, x->ne[0], 1, x->nb[1], size_t(s.n_tokens - 1) * x->nb[1]);
    return mul_mat(s.ctx, s.model.output, build_norm(s, x, norm, eps));
}

Tensor* build_forward(ForwardState& s) {
    const std::string& arch = s.model.hp.arch;
    if (arch == "llama" || arch == "qwen2") return build_forward_llama(s);
    MF_ASSERT_MSG(false, "load_hparams accepted an architecture with no graph builder");
    return nullptr;
}

}  // namespace mf
