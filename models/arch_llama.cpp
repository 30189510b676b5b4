// The llama forward pass (Llama 2/3, SmolLM, Mistral without sliding window) and qwen2, which
// differs only by biases on Q/K/V and NeoX-style RoPE (both read from HParams).
#include "core/common.h"
#include "models/builders.h"

namespace mf {

Tensor* build_forward_llama(ForwardState& s) {
    Context& ctx = s.ctx;
    const Model& m = s.model;
    const HParams& hp = m.hp;

    Tensor* x = get_rows(ctx, m.tok_embd, s.tokens);  // [n_embd, T]
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const LayerWeights& l = m.layers[il];

        Tensor* h = build_norm(s, x, l.attn_norm, hp.norm_eps);
        const QKV p = build_qkv(s, il, h, l);
        Tensor* q = rope(ctx, p.q, s.positions, int(hp.n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale,
                         m.rope_freqs);
        Tensor* k = rope(ctx, p.k, s.positions, int(hp.n_rot), hp.rope_mode, hp.rope_freq_base, hp.rope_freq_scale,
                         m.rope_freqs);

        Tensor* attn = build_attn(s, il, q, k, p.v);
        x = add(ctx, x, build_linear(s, attn, l.wo, nullptr));

        h = build_norm(s, x, l.ffn_norm, hp.norm_eps);
        const GateUp gu = build_gate_up(s, h, l.ffn_gate, l.ffn_up, l.ffn_gate_up);
        x = add(ctx, x, mul_mat(ctx, l.ffn_down, swiglu(ctx, gu.gate, gu.up)));
    }

    return build_output(s, x, m.output_norm, hp.norm_eps);
}

}  // namespace mf
