// The deepseek2 forward pass (DeepSeek-V2, V2-Lite): MLA attention run in absorbed form at every step
// (W_UK folded into the queries, W_UV applied after attention), dense or mixture-of-experts FFNs.
#include <algorithm>

#include "core/common.h"
#include "models/builders.h"

namespace mf {

namespace {

// x [n, 1, T] repeated n_head times along dim 1: [n, n_head, T], by concatenation (log2 n_head steps).
Tensor* repeat_heads(Context& ctx, Tensor* x, int64_t n_head) {
    Tensor* out = x;
    while (out->ne[1] < n_head) {
        const int64_t more = std::min(out->ne[1], n_head - out->ne[1]);
        Tensor* part = more == out->ne[1] ? out : view_3d(ctx, out, out->ne[0], more, out->ne[2], out->nb[1], out->nb[2], 0);
        out = concat(ctx, out, part, 1);
    }
    return out;
}

// Layer il's attention with --mla-expanded: per head k = [W_UK c_kv ; k_pe] and v = W_UV c_kv are
// formed for the new tokens and cached like an MHA layer's (head_dim_k_mla and head_dim_v_mla values
// a head), so attention reads n_head K and V rows per position instead of one latent row. The same
// scores and outputs as the absorbed form (test_deepseek2), for comparison.
// q_nope [nope, n_head, T], q_pe roped [n_rot, n_head, T], c_kv normed [kv_lora, T], k_pe roped [n_rot, 1, T].
Tensor* build_mla_expanded(ForwardState& s, uint32_t il, Tensor* q_nope, Tensor* q_pe, Tensor* c_kv, Tensor* k_pe) {
    Context& ctx = s.ctx;
    const HParams& hp = s.model.hp;
    const LayerWeights& l = s.model.layers[il];
    const int64_t T = s.n_tokens, n_head = hp.n_head, kv_lora = hp.kv_lora_rank;
    const int64_t nope = hp.head_dim_k_mla - hp.n_rot, v_dim = hp.head_dim_v_mla;
    Tensor *k_nope = nullptr, *v = nullptr;
    if (l.wkv_b) {
        // Older files: one product gives each head's k_nope and v rows.
        Tensor* kvb = mul_mat(ctx, l.wkv_b, c_kv);  // [n_head * (nope + v_dim), T]
        const size_t head = size_t(nope + v_dim) * sizeof(float);
        k_nope = view_3d(ctx, kvb, nope, n_head, T, head, kvb->nb[1], 0);
        v = view_3d(ctx, kvb, v_dim, n_head, T, head, kvb->nb[1], size_t(nope) * sizeof(float));
    } else {
        // attn_k_b holds W_UK with the nope index innermost ([nope, kv_lora, n_head]); the product
        // needs kv_lora innermost, so each step transposes it (in f32): a cost of this comparison
        // path only. attn_v_b [kv_lora, v_dim, n_head] is a plain matrix of n_head * v_dim rows.
        Tensor* wk = cont(ctx, transpose(ctx, cast(ctx, l.wk_b, DType::F32)));  // [kv_lora, nope, n_head]
        k_nope = reshape_3d(ctx, mul_mat(ctx, reshape_2d(ctx, wk, kv_lora, nope * n_head), c_kv), nope, n_head, T);
        v = mul_mat(ctx, reshape_2d(ctx, l.wv_b, kv_lora, v_dim * n_head), c_kv);  // [v_dim * n_head, T]
    }
    if (!v->is_contiguous()) v = cont(ctx, v);
    Tensor* q = concat(ctx, q_nope, q_pe, 0);                               // [nope + n_rot, n_head, T]
    Tensor* k = concat(ctx, k_nope, repeat_heads(ctx, k_pe, n_head), 0);   // [nope + n_rot, n_head, T]
    return build_attn(s, il, q, k, reshape_2d(ctx, v, v_dim * n_head, T), hp.kq_scale);
}

// Layer il's attention before attn_output. The cache holds one latent row per token, [c_kv ; k_pe];
// a head's score q_nope . (W_UK c_kv) + q_pe . k_pe is computed as (W_UK^T q_nope) . c_kv + q_pe . k_pe,
// and its output W_UV (sum_j p_j c_kv_j), so attention never expands K or V per head.
// h: [n_embd, T] -> [head_dim_v_mla * n_head, T]
Tensor* build_mla(ForwardState& s, uint32_t il, Tensor* h) {
    Context& ctx = s.ctx;
    const Model& m = s.model;
    const HParams& hp = m.hp;
    const LayerWeights& l = m.layers[il];
    const int64_t T = s.n_tokens, n_head = hp.n_head, n_rot = hp.n_rot, kv_lora = hp.kv_lora_rank;
    const int64_t hd_q = hp.head_dim_k_mla, nope = hd_q - n_rot, v_dim = hp.head_dim_v_mla;
    const size_t f32 = sizeof(float);

    // wq's (or wq_a's) product and wkv_a_mqa's: views of one matmul when the loader stacked them.
    Tensor* wq_in = l.wq ? l.wq : l.wq_a;
    Tensor* q_in;
    Tensor* kv;  // [kv_lora + n_rot, T]
    if (l.wq_kv_a) {
        Tensor* both = mul_mat(ctx, l.wq_kv_a, h);
        q_in = view_2d(ctx, both, wq_in->ne[1], T, both->nb[1], 0);
        kv = view_2d(ctx, both, kv_lora + n_rot, T, both->nb[1], size_t(wq_in->ne[1]) * f32);
    } else {
        q_in = mul_mat(ctx, wq_in, h);
        kv = mul_mat(ctx, l.wkv_a_mqa, h);
    }

    // Queries, per head q_nope then q_pe.
    Tensor* q = l.wq ? q_in : mul_mat(ctx, l.wq_b, build_norm(s, q_in, l.attn_q_a_norm, hp.norm_eps));
    q = view_3d(ctx, q, hd_q, n_head, T, size_t(hd_q) * f32, q->nb[1], 0);
    Tensor* q_nope = view_3d(ctx, q, nope, n_head, T, q->nb[1], q->nb[2], 0);
    Tensor* q_pe = view_3d(ctx, q, n_rot, n_head, T, q->nb[1], q->nb[2], size_t(nope) * f32);
    q_pe = rope(ctx, q_pe, s.positions, int(n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale, m.rope_freqs);

    // The latent row of each new token: c_kv after its RMSNorm, then the roped k_pe (one head).
    Tensor* c_kv = build_norm(s, view_2d(ctx, kv, kv_lora, T, kv->nb[1], 0), l.attn_kv_a_norm, hp.norm_eps);
    Tensor* k_pe = view_3d(ctx, kv, n_rot, 1, T, kv->nb[1], kv->nb[1], size_t(kv_lora) * f32);
    k_pe = rope(ctx, k_pe, s.positions, int(n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale, m.rope_freqs);
    if (s.kv.plan.layers[il].kind != AttnKind::MLA) return build_mla_expanded(s, il, q_nope, q_pe, c_kv, k_pe);

    Tensor* q_abs = mul_mat(ctx, l.wk_b, permute(ctx, q_nope, 0, 2, 1, 3));  // [kv_lora, T, n_head]
    Tensor* q_row = concat(ctx, permute(ctx, q_abs, 0, 2, 1, 3), q_pe, 0);  // [kv_lora + n_rot, n_head, T]
    // [kv_lora, n_head, T]
    Tensor* o = build_attn_mla(s, il, q_row, c_kv, reshape_2d(ctx, k_pe, n_rot, T), hp.kq_scale);
    // W_UV per head: attn_v_b, or in older files the value rows of each head's block of attn_kv_b.
    Tensor* wv_b = l.wv_b;
    if (!wv_b) {
        const size_t row = l.wkv_b->nb[1];
        wv_b = view_3d(ctx, l.wkv_b, kv_lora, v_dim, n_head, row, row * size_t(nope + v_dim), row * size_t(nope));
    }
    Tensor* out = mul_mat(ctx, wv_b, permute(ctx, o, 0, 2, 1, 3));  // [v_dim, T, n_head]
    out = permute(ctx, out, 0, 2, 1, 3);                              // [v_dim, n_head, T]
    if (!out->is_contiguous()) out = cont(ctx, out);  // one token (decode): already in order, no copy
    return reshape_2d(ctx, out, v_dim * n_head, T);
}

}  // namespace

Tensor* build_forward_deepseek2(ForwardState& s) {
    Context& ctx = s.ctx;
    const Model& m = s.model;
    const HParams& hp = m.hp;

    Tensor* x = get_rows(ctx, m.tok_embd, s.tokens);  // [n_embd, T]
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const LayerWeights& l = m.layers[il];
        Tensor* h = build_norm(s, x, l.attn_norm, hp.norm_eps);
        x = add(ctx, x, mul_mat(ctx, l.wo, build_mla(s, il, h)));

        h = build_norm(s, x, l.ffn_norm, hp.norm_eps);
        x = l.ffn_gate_inp ? build_ffn_moe(s, h, x, l)
                           : add(ctx, x, build_ffn_swiglu(s, h, l.ffn_gate, l.ffn_up, l.ffn_gate_up, l.ffn_down));
    }

    return build_output(s, x, m.output_norm, hp.norm_eps);
}

}  // namespace mf
