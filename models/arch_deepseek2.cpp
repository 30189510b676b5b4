// The deepseek2 forward pass (DeepSeek-V2, V2-Lite): MLA attention run in absorbed form at every step
// (W_UK folded into the queries, W_UV applied after attention), dense or mixture-of-experts FFNs.
#include "core/common.h"
#include "models/builders.h"

namespace mf {

namespace {

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

    // Queries, per head q_nope then q_pe.
    Tensor* q = l.wq ? mul_mat(ctx, l.wq, h)
                     : mul_mat(ctx, l.wq_b, build_norm(s, mul_mat(ctx, l.wq_a, h), l.attn_q_a_norm, hp.norm_eps));
    q = reshape_3d(ctx, q, hd_q, n_head, T);
    Tensor* q_nope = view_3d(ctx, q, nope, n_head, T, q->nb[1], q->nb[2], 0);
    Tensor* q_pe = view_3d(ctx, q, n_rot, n_head, T, q->nb[1], q->nb[2], size_t(nope) * f32);
    q_pe = rope(ctx, q_pe, s.positions, int(n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale, m.rope_freqs);
    Tensor* q_abs = mul_mat(ctx, l.wk_b, permute(ctx, q_nope, 0, 2, 1, 3));  // [kv_lora, T, n_head]
    Tensor* q_row = concat(ctx, permute(ctx, q_abs, 0, 2, 1, 3), q_pe, 0);  // [kv_lora + n_rot, n_head, T]

    // The latent row of each new token: c_kv after its RMSNorm, then the roped k_pe (one head).
    Tensor* kv = mul_mat(ctx, l.wkv_a_mqa, h);  // [kv_lora + n_rot, T]
    Tensor* c_kv = build_norm(s, view_2d(ctx, kv, kv_lora, T, kv->nb[1], 0), l.attn_kv_a_norm, hp.norm_eps);
    Tensor* k_pe = view_3d(ctx, kv, n_rot, 1, T, kv->nb[1], kv->nb[1], size_t(kv_lora) * f32);
    k_pe = rope(ctx, k_pe, s.positions, int(n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale, m.rope_freqs);
    Tensor* kv_row = concat(ctx, c_kv, reshape_2d(ctx, k_pe, n_rot, T), 0);  // [kv_lora + n_rot, T]

    Tensor* o = build_attn_mla(s, il, q_row, kv_row, hp.kq_scale);  // [kv_lora, n_head, T]
    // W_UV per head: attn_v_b, or in older files the value rows of each head's block of attn_kv_b.
    Tensor* wv_b = l.wv_b;
    if (!wv_b) {
        const size_t row = l.wkv_b->nb[1];
        wv_b = view_3d(ctx, l.wkv_b, kv_lora, v_dim, n_head, row, row * size_t(nope + v_dim), row * size_t(nope));
    }
    Tensor* out = mul_mat(ctx, wv_b, permute(ctx, o, 0, 2, 1, 3));  // [v_dim, T, n_head]
    return reshape_2d(ctx, cont(ctx, permute(ctx, out, 0, 2, 1, 3)), v_dim * n_head, T);
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
        x = add(ctx, x, l.ffn_gate_inp ? build_ffn_moe(s, h, l) : build_ffn_swiglu(s, h, l.ffn_gate, l.ffn_up, l.ffn_down));
    }

    return build_output(s, x, m.output_norm, hp.norm_eps);
}

}  // namespace mf
