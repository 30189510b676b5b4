// Shared graph builders: norm, linear, attention over the KV cache (by default one FLASH_ATTN node
// reading the cache in its stored types; --attn picks ATTN_FUSED or an explicit graph), SwiGLU FFN, the output head.
#include "models/builders.h"

#include <cmath>

#include "core/common.h"

namespace mf {

Tensor* build_forward_llama(ForwardState& s);
Tensor* build_forward_gemma3(ForwardState& s);
Tensor* build_forward_deepseek2(ForwardState& s);

AttnImpl attn_impl_from_name(const std::string& name) {
    if (name == "naive") return AttnImpl::NAIVE;
    if (name == "fused") return AttnImpl::FUSED;
    if (name == "flash") return AttnImpl::FLASH;
    throw Error("unknown attention backend '" + name + "' (naive, fused or flash)");
}

const char* attn_impl_name(AttnImpl impl) {
    switch (impl) {
        case AttnImpl::NAIVE: return "naive";
        case AttnImpl::FUSED: return "fused";
        case AttnImpl::FLASH: return "flash";
    }
    return "?";
}

namespace {

// Attention as textbook matrix products. The scores are K rows dotted with the queries: mul_mat
// over the cache view, whose dim-2 broadcast gives query head h the KV head h / group, as FLASH_ATTN
// does. V is cached a row per position, so the probabilities need V^T [n_span, hd_v] per KV head:
// a quantized block cannot be transposed, so V is first converted to f32 rows (a copy), then
// transposed into contiguous f32 (a second copy; for f16 one converting copy does both).
Tensor* build_attn_naive(Context& ctx, Tensor* q, Tensor* K, Tensor* V, Tensor* mask, float scale) {
    Tensor* qt = permute(ctx, q, 0, 2, 1, 3);                         // [hd_k, T, n_head]
    Tensor* kq = soft_max(ctx, mul_mat(ctx, K, qt), mask, scale);     // [n_span, T, n_head]
    Tensor* v32 = dtype_traits(V->type).is_quantized ? cast(ctx, V, DType::F32) : V;
    Tensor* vt = cast(ctx, transpose(ctx, v32), DType::F32);          // [n_span, hd_v, n_head_kv]
    Tensor* kqv = mul_mat(ctx, vt, kq);                               // [hd_v, T, n_head]
    return cont(ctx, permute(ctx, kqv, 0, 2, 1, 3));                  // [hd_v, n_head, T]
}

}  // namespace

Tensor* build_attn_core(Context& ctx, AttnImpl impl, Tensor* q, Tensor* K, Tensor* V, Tensor* mask, float scale,
                        Tensor* K_tail) {
    switch (impl) {
        case AttnImpl::NAIVE:
            // The textbook form multiplies whole K rows: the tail joins them, both in f32.
            if (K_tail) K = concat(ctx, cast(ctx, K, DType::F32), cast(ctx, K_tail, DType::F32), 0);
            return build_attn_naive(ctx, q, K, V, mask, scale);
        case AttnImpl::FUSED: return attn_fused(ctx, q, K, V, mask, scale, K_tail);
        case AttnImpl::FLASH: break;
    }
    return flash_attn(ctx, q, K, V, mask, scale, K_tail);
}

Tensor* build_norm(ForwardState& s, Tensor* x, Tensor* weight, float eps) {
    return mul(s.ctx, rms_norm(s.ctx, x, eps), weight);
}

Tensor* build_linear(ForwardState& s, Tensor* x, Tensor* w, Tensor* b) {
    Tensor* y = mul_mat(s.ctx, w, x);
    return b ? add(s.ctx, y, b) : y;
}

QKV build_qkv(ForwardState& s, uint32_t il, Tensor* x, const LayerWeights& l) {
    Context& ctx = s.ctx;
    const HParams& hp = s.model.hp;
    const int64_t T = s.n_tokens, n_head_kv = hp.n_head_kv[il], hd_k = hp.head_dim_k;
    if (!l.wqkv) {
        return {reshape_3d(ctx, build_linear(s, x, l.wq, l.bq), hd_k, hp.n_head, T),
                reshape_3d(ctx, build_linear(s, x, l.wk, l.bk), hd_k, n_head_kv, T), build_linear(s, x, l.wv, l.bv)};
    }
    Tensor* qkv = build_linear(s, x, l.wqkv, l.bqkv);  // [q_dim + k_dim + v_dim, T]
    const size_t f32 = sizeof(float), row = qkv->nb[1];
    const int64_t q_dim = hp.n_head * hd_k, k_dim = n_head_kv * hd_k;
    return {view_3d(ctx, qkv, hd_k, hp.n_head, T, hd_k * f32, row, 0),
            view_3d(ctx, qkv, hd_k, n_head_kv, T, hd_k * f32, row, size_t(q_dim) * f32),
            view_2d(ctx, qkv, n_head_kv * int64_t(hp.head_dim_v), T, row, size_t(q_dim + k_dim) * f32)};
}

GateUp build_gate_up(ForwardState& s, Tensor* x, Tensor* gate, Tensor* up, Tensor* gate_up) {
    if (!gate_up) return {mul_mat(s.ctx, gate, x), mul_mat(s.ctx, up, x)};
    Tensor* gu = mul_mat(s.ctx, gate_up, x);  // [2 n_ff, T]
    const int64_t n_ff = gu->ne[0] / 2;
    return {view_2d(s.ctx, gu, n_ff, gu->ne[1], gu->nb[1], 0),
            view_2d(s.ctx, gu, n_ff, gu->ne[1], gu->nb[1], size_t(n_ff) * sizeof(float))};
}

Tensor* build_attn(ForwardState& s, uint32_t il, Tensor* q, Tensor* k, Tensor* v, float kq_scale) {
    Context& ctx = s.ctx;
    const HParams& hp = s.model.hp;
    const KVLayerPlan& lp = s.kv.plan.layers[il];
    const KVStepInput& in = s.kv_in[s.layer_group[il]];
    // The plan's head sizes: an expanded MLA layer's differ from the model's (latent) ones.
    const int64_t hd_k = lp.head_dim_k, hd_v = lp.head_dim_v, n_head_kv = lp.n_head_kv();
    Tensor* kc = s.kv.k[il];
    Tensor* vc = s.kv.v[il];

    if (lp.rotate_k) {
        // The same orthonormal rotation of every query and key head keeps q.k and makes the keys'
        // outlier channels quantize well (KVLayerPlan::rotate_k).
        q = hadamard(ctx, q);
        k = hadamard(ctx, k);
    }
    if (lp.rotate_v) {
        if (!v->is_contiguous()) v = cont(ctx, v);  // a view of stacked q, k, v rows
        v = reshape_2d(ctx, hadamard(ctx, reshape_2d(ctx, v, hd_v, v->nelements() / hd_v)), lp.width_v, s.n_tokens);
    }
    // Store the new keys (already roped, so a ring row keeps its true position) and values, a row
    // per token, converted to the cache's types. The rows are data, so decode steps share one graph.
    // Nothing but the attention reads the cache: the stores are flagged to run beside the queries'
    // path (TENSOR_SIDE); the attention waits for them.
    Tensor* store_k = set_rows(ctx, kc, reshape_2d(ctx, k, lp.width_k, s.n_tokens), in.rows);
    Tensor* store_v = set_rows(ctx, vc, v, in.rows);
    store_k->flags |= TENSOR_SIDE;
    store_v->flags |= TENSOR_SIDE;
    graph_expand(s.graph, store_k);
    graph_expand(s.graph, store_v);

    // The rows attention reads, per KV head: K [hd_k, n_span, n_head_kv], V [hd_v, n_span, n_head_kv].
    Tensor* K = view_3d(ctx, kc, hd_k, in.n_span, n_head_kv, kc->nb[1], dtype_row_size(lp.type_k, hd_k), 0);
    Tensor* V = view_3d(ctx, vc, hd_v, in.n_span, n_head_kv, vc->nb[1], dtype_row_size(lp.type_v, hd_v), 0);
    const float scale = kq_scale != 0.0f ? kq_scale : 1.0f / std::sqrt(float(hd_k));
    Tensor* o = build_attn_core(ctx, s.attn, q, K, V, in.mask, scale);  // [hd_v, n_head, T]
    if (lp.rotate_v) o = hadamard(ctx, o, true);  // back from the rotated values
    return reshape_2d(ctx, o, hd_v * hp.n_head, s.n_tokens);
}

Tensor* build_attn_mla(ForwardState& s, uint32_t il, Tensor* q, Tensor* c_kv, Tensor* k_pe, float kq_scale) {
    Context& ctx = s.ctx;
    const KVLayerPlan& lp = s.kv.plan.layers[il];
    const KVStepInput& in = s.kv_in[s.layer_group[il]];
    MF_ASSERT(lp.kind == AttnKind::MLA && lp.width_v == 0);
    const int64_t kv_lora = lp.head_dim_v, n_rot = lp.width_k - kv_lora;
    Tensor* kc = s.kv.k[il];
    Tensor* kr = s.kv.k_rope[il];  // the roped part's own f16 rows, or null: it ends kc's rows
    // The latent row's store depends on the layer's input alone, not on the queries' path (their
    // ROPE, W_UK): flagged to run beside it (TENSOR_SIDE); the attention, which reads the cache,
    // waits for it.
    auto store = [&](Tensor* cache, Tensor* rows) {
        Tensor* st = set_rows(ctx, cache, rows, in.rows);
        st->flags |= TENSOR_SIDE;
        graph_expand(s.graph, st);
    };
    store(kc, kr ? c_kv : concat(ctx, c_kv, k_pe, 0));  // [kv_lora (+ n_rot), T]
    if (kr) store(kr, k_pe);
    // One read of a cached row serves every head: K [kc's width, n_span, 1], V = its first kv_lora values.
    Tensor* K = view_3d(ctx, kc, kc->ne[0], in.n_span, 1, kc->nb[1], kc->nb[1] * in.n_span, 0);
    Tensor* V = view_3d(ctx, kc, kv_lora, in.n_span, 1, kc->nb[1], kc->nb[1] * in.n_span, 0);
    if (!kr) return build_attn_core(ctx, s.attn, q, K, V, in.mask, kq_scale);
    Tensor* R = view_3d(ctx, kr, n_rot, in.n_span, 1, kr->nb[1], kr->nb[1] * in.n_span, 0);
    return build_attn_core(ctx, s.attn, q, K, V, in.mask, kq_scale, R);
}

Tensor* build_ffn_swiglu(ForwardState& s, Tensor* x, Tensor* gate, Tensor* up, Tensor* gate_up, Tensor* down) {
    const GateUp gu = build_gate_up(s, x, gate, up, gate_up);
    return mul_mat(s.ctx, down, swiglu(s.ctx, gu.gate, gu.up));
}

Tensor* build_output(ForwardState& s, Tensor* x, Tensor* norm, float eps) {
    // Picking the next token needs only the last token's logits.
    if (!s.all_logits) x = view_2d(s.ctx, x, x->ne[0], 1, x->nb[1], size_t(s.n_tokens - 1) * x->nb[1]);
    return mul_mat(s.ctx, s.model.output, build_norm(s, x, norm, eps));
}

Tensor* build_forward(ForwardState& s) {
    const std::string& arch = s.model.hp.arch;
    if (arch == "llama" || arch == "qwen2") return build_forward_llama(s);
    if (arch == "gemma3") return build_forward_gemma3(s);
    if (arch == "deepseek2") return build_forward_deepseek2(s);
    MF_ASSERT_MSG(false, "load_hparams accepted an architecture with no graph builder");
    return nullptr;
}

}  // namespace mf
