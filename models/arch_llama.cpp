// The llama forward pass (Llama 2/3, SmolLM, Mistral without sliding window) and qwen2, which
// differs only by biases on Q/K/V and NeoX-style RoPE (both read from HParams).
#include "core/common.h"
#include "models/builders.h"

namespace mf {

Tensor* build_forward_llama(ForwardState& s) {
    Context& ctx = s.ctx;
    const Model& m = s.model;
    const HParams& hp = m.hp;
    const int64_t T = s.n_tokens;

    Tensor* x = get_rows(ctx, m.tok_embd, s.tokens);  // [n_embd, T]
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const LayerWeights& l = m.layers[il];
        const int64_t n_head_kv = hp.n_head_kv[il];

        Tensor* h = build_norm(s, x, l.attn_norm, hp.norm_eps);
        Tensor* q = reshape_3d(ctx, build_linear(s, h, l.wq, l.bq), hp.head_dim_k, hp.n_head, T);
        Tensor* k = reshape_3d(ctx, build_linear(s, h, l.wk, l.bk), hp.head_dim_k, n_head_kv, T);
        Tensor* v = build_linear(s, h, l.wv, l.bv);  // [head_dim_v * n_head_kv, T]
        q = rope(ctx, q, s.positions, int(hp.n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale, m.rope_freqs);
        k = rope(ctx, k, s.positions, int(hp.n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale, m.rope_freqs);

        Tensor* attn = build_attn(s, il, q, k, v);
        x = add(ctx, x, build_linear(s, attn, l.wo, nullptr));

        h = build_norm(s, x, l.ffn_norm, hp.norm_eps);
        x = add(ctx, x, build_ffn_swiglu(s, h, l.ffn_gate, l.ffn_up, l.ffn_down));
    }

    return build_output(s, x, m.output_norm, hp.norm_eps);
}

}  // namespace mf
