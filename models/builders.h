// Shared graph builders every architecture composes (norm, attention with cache store, FFN),
// and the state one forward pass is built in.
#pragma once

#include <map>

#include "core/graph.h"
#include "core/ops.h"
#include "models/kv_cache.h"
#include "models/model.h"

namespace mf {

// How attention over the KV cache is computed (`--attn`); all three give the same result up to
// rounding (tests/test_attn_backends.cpp) and read the cache rows in their stored type.
enum class AttnImpl {
    NAIVE,  // explicit graph: scores = mul_mat(K, q), soft_max(scores, mask), mul_mat(V^T, probabilities);
            //   the scores [n_span, T, n_head] are a tensor, and V^T is made by copies (cast, transpose, cont)
    FUSED,  // one ATTN_FUSED node: per KV head group, all scores in scratch / shared memory, then an exact
            //   softmax, then the V sum (CUDA: spans up to what a block's shared memory holds)
    FLASH,  // one FLASH_ATTN node: online softmax, no scores kept (the default)
};

// "naive", "fused", "flash" -> AttnImpl; anything else throws Error naming the choices.
AttnImpl attn_impl_from_name(const std::string& name);
const char* attn_impl_name(AttnImpl impl);

// The per-step inputs of the layers that share one cache geometry (window, sinks, rows): where the
// new tokens are stored and which cached rows each of them sees.
struct KVStepInput {
    uint32_t n_span = 0;       // cache rows attention reads: 0 .. n_span - 1
    Tensor* rows = nullptr;    // I32 [n_tokens] input: the cache row each new token is stored in
    Tensor* mask = nullptr;    // f32 [n_span, n_tokens] input: 0 where visible, -inf elsewhere
};

// Everything a graph builder needs for one forward pass over n_tokens new tokens. Where the tokens
// sit in the cache is input data (positions, rows, masks), never graph shape, so one graph serves
// many decode steps.
struct ForwardState {
    Context& ctx;        // where this pass's nodes are recorded
    Graph& graph;        // cache stores are expanded into it as they are built, in layer order
    const Model& model;
    KVCache& kv;
    uint32_t n_tokens;   // new tokens in this pass
    bool all_logits;     // logits for every new token (perplexity), not only the last
    Tensor* tokens;      // I32 [n_tokens] input
    Tensor* positions;   // I32 [n_tokens] input: the tokens' true positions (RoPE)
    std::vector<KVStepInput> kv_in;     // per cache geometry
    std::vector<uint32_t> layer_group;  // per layer: its index in kv_in
    AttnImpl attn = AttnImpl::FLASH;    // how build_attn / build_attn_mla compute attention
};

// rms_norm(x) * weight; x: [n_embd, T] -> [n_embd, T]
Tensor* build_norm(ForwardState& s, Tensor* x, Tensor* weight, float eps);
// x: [n_in, T] -> [n_out, T]: w x (+ b)
Tensor* build_linear(ForwardState& s, Tensor* x, Tensor* w, Tensor* b);
// The query, key and value projections of layer il: one matmul of l.wqkv (plus l.bqkv) whose rows
// are viewed as q, k, v when the loader stacked them, else three. x: [n_embd, T] ->
// q [head_dim_k, n_head, T], k [head_dim_k, n_head_kv, T], v [head_dim_v * n_head_kv, T]
// (views with a row stride of q + k + v values when stacked).
struct QKV {
    Tensor* q;
    Tensor* k;
    Tensor* v;
};
QKV build_qkv(ForwardState& s, uint32_t il, Tensor* x, const LayerWeights& l);
// The gate and up projections of an FFN: one matmul of gate_up (the loader's stack of gate's rows,
// then up's) viewed as two when there is one, else two. x: [n_embd, T] -> gate, up: [n_ff, T]
struct GateUp {
    Tensor* gate;
    Tensor* up;
};
GateUp build_gate_up(ForwardState& s, Tensor* x, Tensor* gate, Tensor* up, Tensor* gate_up);
// Stores k, v of the new tokens in layer il's cache and attends q over the cached positions the
// layer sees (its window, if any). kq_scale 0 means 1 / sqrt(head_dim_k).
// q: [head_dim_k, n_head, T], k: [head_dim_k, n_head_kv, T], v: [head_dim_v * n_head_kv, T]
// -> [head_dim_v * n_head, T] (before the output projection)
Tensor* build_attn(ForwardState& s, uint32_t il, Tensor* q, Tensor* k, Tensor* v, float kq_scale = 0.0f);
// Attention of q over cache views with impl's kernels (see Op::FLASH_ATTN for the contract):
// q f32 [hd_k, n_head, T], K [hd_k, n_span, n_head_kv], V [hd_v, n_span, n_head_kv] (cache row types),
// mask f32 [n_span, >= T] -> f32 [hd_v, n_head, T]; K_tail (optional): the K rows' last values kept
// apart in f16 (flash_attn's k_tail), q then [K's width + K_tail's, n_head, T]
Tensor* build_attn_core(Context& ctx, AttnImpl impl, Tensor* q, Tensor* K, Tensor* V, Tensor* mask, float scale,
                        Tensor* K_tail = nullptr);
// MLA (absorbed): stores each new token's latent row [c_kv ; k_pe] in layer il's cache and attends
// the absorbed queries over the cached rows as one KV head: K is the whole row, V its first
// kv_lora_rank values. A quantized latent keeps the roped part apart in f16 (KVLayerPlan::rope_apart).
// q: [kv_lora_rank + n_rot, n_head, T], c_kv: [kv_lora_rank, T], k_pe: [n_rot, T]
// -> [kv_lora_rank, n_head, T] (still in the latent space: W_UV comes after)
Tensor* build_attn_mla(ForwardState& s, uint32_t il, Tensor* q, Tensor* c_kv, Tensor* k_pe, float kq_scale);
// SwiGLU feed-forward: down(silu(gate x) * up x); x: [n_embd, T] -> [n_embd, T]
Tensor* build_ffn_swiglu(ForwardState& s, Tensor* x, Tensor* gate, Tensor* up, Tensor* gate_up, Tensor* down);

// Mixture-of-experts feed-forward of layer l (models/moe.cpp): router logits, gating (softmax or
// sigmoid, HParams::expert_gating), top-n_expert_used selection (plus ffn_exp_probs_b for selection
// only, when present), optional renormalization and expert_weights_scale, the selected experts'
// SwiGLU FFNs (reading only their weights), their weighted sum, plus the shared experts' SwiGLU FFN,
// plus residual: (residual + shared) + routed, in that order, so that on CUDA the shared experts' down
// projection stores the first sum and the routed one the second (no ADD launched).
// x, residual: [n_embd, T] -> [n_embd, T]
Tensor* build_ffn_moe(ForwardState& s, Tensor* x, Tensor* residual, const LayerWeights& l);

// Final norm and output projection of the last token, or of every token when s.all_logits.
// x: [n_embd, T] -> f32 [n_vocab, 1] (or [n_vocab, T])
Tensor* build_output(ForwardState& s, Tensor* x, Tensor* norm, float eps);

// The architecture's forward pass: the logits build_output returns.
Tensor* build_forward(ForwardState& s);

}  // namespace mf
