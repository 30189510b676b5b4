// The mixture-of-experts feed-forward (deepseek2), as llama.cpp's build_moe_ffn: router, gating,
// top-k routing, the chosen experts' SwiGLU FFNs through MUL_MAT_ID, their weighted sum, shared experts.
#include "core/common.h"
#include "models/builders.h"

namespace mf {

Tensor* build_ffn_moe(ForwardState& s, Tensor* x, Tensor* residual, const LayerWeights& l) {
    Context& ctx = s.ctx;
    const HParams& hp = s.model.hp;
    const int64_t n_embd = x->ne[0], T = x->ne[1];
    const int64_t n_expert = hp.n_expert, n_used = hp.n_expert_used;
    MF_ASSERT(l.ffn_gate_inp && l.ffn_gate_exps && l.ffn_up_exps && l.ffn_down_exps);
    MF_ASSERT(n_used >= 1 && n_used <= n_expert && l.ffn_gate_inp->ne[1] == n_expert);

    // Routing: a probability per expert; the selection bias (DeepSeek-V3's load balancing) changes which
    // experts are chosen, never their weights.
    Tensor* logits = mul_mat(ctx, l.ffn_gate_inp, x);  // [n_expert, T]
    // Softmax gating with neither a selection bias nor renormalized weights (DeepSeek-V2): the softmax
    // keeps the logits' order, so the experts are the top logits, and the down projection takes each
    // slot's weight from the logits itself (no SOFT_MAX, GET_ROWS or SCALE launched).
    const bool gate_in_down = hp.expert_gating == HParams::ExpertGating::SOFTMAX && !l.ffn_exp_probs_b &&
                              !hp.expert_weights_norm;
    Tensor* ids;                // I32 [n_used, T]
    Tensor* weights = nullptr;  // f32 [n_used, T], unless the down projection gates
    if (gate_in_down) {
        ids = top_k(ctx, logits, int(n_used));
    } else {
        Tensor* probs = hp.expert_gating == HParams::ExpertGating::SIGMOID ? sigmoid(ctx, logits)
                                                                           : soft_max(ctx, logits, nullptr, 1.0f);
        Tensor* selection = l.ffn_exp_probs_b ? add(ctx, probs, l.ffn_exp_probs_b) : probs;
        ids = top_k(ctx, selection, int(n_used));
        weights = get_rows(ctx, reshape_3d(ctx, probs, 1, n_expert, T), ids);  // [1, n_used, T]
        if (hp.expert_weights_norm) {
            Tensor* w = reshape_2d(ctx, weights, n_used, T);
            weights = reshape_3d(ctx, div(ctx, w, sum_rows(ctx, w)), 1, n_used, T);
        }
        if (hp.expert_weights_scale != 1.0f) weights = scale(ctx, weights, hp.expert_weights_scale);
        weights = reshape_2d(ctx, weights, n_used, T);
        // In the graph before the experts' matmuls, so the down projection's SWIGLU stays the node just
        // before its MUL_MAT_ID (the CUDA backend then fuses it into that matmul's quantization).
        graph_expand(s.graph, weights);
    }

    // The shared experts' gate and up first, then the routed experts': both read x, so on CUDA the
    // second reuses the first's quantized x.
    const bool shared = l.ffn_gate_shexp || l.ffn_gate_up_shexp;
    GateUp shexp{};
    if (shared) {
        shexp = build_gate_up(s, x, l.ffn_gate_shexp, l.ffn_up_shexp, l.ffn_gate_up_shexp);
        graph_expand(s.graph, shexp.gate);
        graph_expand(s.graph, shexp.up);
    }
    // The chosen experts, each token's activation shared by its n_used slots.
    Tensor* xe = view_3d(ctx, x, n_embd, 1, T, x->nb[1], x->nb[1], 0);              // [n_embd, 1, T]
    Tensor* gate;  // [n_ff_exp, n_used, T]
    Tensor* up;
    if (l.ffn_gate_up_exps) {  // one MUL_MAT_ID, viewed as two
        Tensor* gu = mul_mat_id(ctx, l.ffn_gate_up_exps, xe, ids);  // [2 n_ff_exp, n_used, T]
        const int64_t n_ff = gu->ne[0] / 2;
        gate = view_3d(ctx, gu, n_ff, n_used, T, gu->nb[1], gu->nb[2], 0);
        up = view_3d(ctx, gu, n_ff, n_used, T, gu->nb[1], gu->nb[2], size_t(n_ff) * sizeof(float));
    } else {
        gate = mul_mat_id(ctx, l.ffn_gate_exps, xe, ids);
        up = mul_mat_id(ctx, l.ffn_up_exps, xe, ids);
    }
    graph_expand(s.graph, gate);
    graph_expand(s.graph, up);

    // The residual plus the shared experts' FFN: each ADD just after the product it adds. The shared
    // experts' chain depends on x alone: flagged to run beside the routing and the routed experts
    // (TENSOR_SIDE; the CUDA backend's second stream).
    Tensor* sum = residual;
    if (shared) {
        Tensor* act = swiglu(ctx, shexp.gate, shexp.up);
        Tensor* down = mul_mat(ctx, l.ffn_down_shexp, act);
        sum = sum ? add(ctx, sum, down) : down;
        for (Tensor* t : {shexp.gate, shexp.up, act, down, sum}) {
            for (; t && t != x; t = t->op == Op::VIEW ? t->view_src : nullptr) t->flags |= TENSOR_SIDE;
        }
        graph_expand(s.graph, sum);
    }
    // The down projection sums each token's slots, times their weights, as it goes.
    Tensor* act = swiglu(ctx, gate, up);
    Tensor* out = gate_in_down
                      ? mul_mat_id_softmax_gated(ctx, l.ffn_down_exps, act, ids, logits, hp.expert_weights_scale)
                      : mul_mat_id(ctx, l.ffn_down_exps, act, ids, weights);  // [n_embd, T]
    return sum ? add(ctx, out, sum) : out;
}

}  // namespace mf
