// The gemma3 forward pass (Gemma 3): embeddings scaled by sqrt(n_embd), per-head RMSNorm of q and k,
// local (sliding-window) and global layers with their own RoPE bases, GeGLU, and post-norms.
#include <cmath>

#include "core/common.h"
#include "models/builders.h"

namespace mf {

// The norm weights in a gemma3 GGUF already hold Gemma's (1 + w) (llama.cpp's converter adds the 1),
// so build_norm's plain rms_norm * weight is Gemma's RMSNorm.
Tensor* build_forward_gemma3(ForwardState& s) {
    Context& ctx = s.ctx;
    const Model& m = s.model;
    const HParams& hp = m.hp;

    Tensor* x = scale(ctx, get_rows(ctx, m.tok_embd, s.tokens), std::sqrt(float(hp.n_embd)));  // [n_embd, T]
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const LayerWeights& l = m.layers[il];
        const bool local = hp.swa_layers[il];
        const float freq_base = local ? hp.rope_freq_base_swa : hp.rope_freq_base;
        const float freq_scale = local ? hp.rope_freq_scale_swa : hp.rope_freq_scale;

        Tensor* h = build_norm(s, x, l.attn_norm, hp.norm_eps);
        const QKV p = build_qkv(s, il, h, l);
        Tensor* q = build_norm(s, p.q, l.attn_q_norm, hp.norm_eps);  // per head: rms over head_dim_k
        Tensor* k = build_norm(s, p.k, l.attn_k_norm, hp.norm_eps);
        Tensor* v = p.v;
        q = rope(ctx, q, s.positions, int(hp.n_rot), hp.rope_mode, freq_base, freq_scale, nullptr);
        k = rope(ctx, k, s.positions, int(hp.n_rot), hp.rope_mode, freq_base, freq_scale, nullptr);

        Tensor* attn = build_linear(s, build_attn(s, il, q, k, v, hp.kq_scale), l.wo, nullptr);
        x = add(ctx, x, build_norm(s, attn, l.post_attention_norm, hp.norm_eps));

        h = build_norm(s, x, l.ffn_norm, hp.norm_eps);
        const GateUp gu = build_gate_up(s, h, l.ffn_gate, l.ffn_up, l.ffn_gate_up);
        Tensor* ffn = mul_mat(ctx, l.ffn_down, geglu(ctx, gu.gate, gu.up));
        x = add(ctx, x, build_norm(s, ffn, l.post_ffw_norm, hp.norm_eps));
    }

    return build_output(s, x, m.output_norm, hp.norm_eps);
}

}  // namespace mf
