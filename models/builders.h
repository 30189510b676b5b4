// Shared graph builders every architecture composes (norm, attention with cache store, FFN),
// and the state one forward pass is built in.
#pragma once

#include <map>

#include "core/graph.h"
#include "core/ops.h"
#include "models/kv_cache.h"
#include "models/model.h"

namespace mf {

// Everything a graph builder needs for one forward pass over n_tokens new tokens. Where the tokens
// sit in the cache is input data (positions, v_slots, the mask), never graph shape, so one graph
// serves many decode steps.
struct ForwardState {
    Context& ctx;        // where this pass's nodes are recorded
    Graph& graph;        // cache stores are expanded into it as they are built, in layer order
    const Model& model;
    KVCache& kv;
    uint32_t n_tokens;   // new tokens in this pass
    uint32_t n_kv;       // cache positions attention spans: n_past + n_tokens rounded up (session.cpp)
    bool all_logits;     // logits for every new token (perplexity), not only the last
    Tensor* tokens;      // I32 [n_tokens] input
    Tensor* positions;   // I32 [n_tokens] input: n_past .. n_past + n_tokens - 1 (also the K cache rows)
    Tensor* kq_mask;     // f32 [n_kv, n_tokens] input: 0 where visible, -inf elsewhere
    // Per V-cache width C (channels): I32 [C * n_tokens] input, the V cache element each new value
    // goes to (the V cache is transposed); made on first use, filled by the session.
    std::map<int64_t, Tensor*> v_slots;

    Tensor* v_slots_for(int64_t channels);
};

// rms_norm(x) * weight; x: [n_embd, T] -> [n_embd, T]
Tensor* build_norm(ForwardState& s, Tensor* x, Tensor* weight, float eps);
// x: [n_in, T] -> [n_out, T]: w x (+ b)
Tensor* build_linear(ForwardState& s, Tensor* x, Tensor* w, Tensor* b);
// Stores k, v of the new tokens in layer il's cache and attends q over all cached positions.
// q: [head_dim_k, n_head, T], k: [head_dim_k, n_head_kv, T], v: [head_dim_v * n_head_kv, T]
// -> [head_dim_v * n_head, T] (before the output projection)
Tensor* build_attn(ForwardState& s, uint32_t il, Tensor* q, Tensor* k, Tensor* v);
// SwiGLU feed-forward: down(silu(gate x) * up x); x: [n_embd, T] -> [n_embd, T]
Tensor* build_ffn_swiglu(ForwardState& s, Tensor* x, Tensor* gate, Tensor* up, Tensor* down);

// Final norm and output projection of the last token, or of every token when s.all_logits.
// x: [n_embd, T] -> f32 [n_vocab, 1] (or [n_vocab, T])
Tensor* build_output(ForwardState& s, Tensor* x, Tensor* norm, float eps);

// The architecture's forward pass: the logits build_output returns.
Tensor* build_forward(ForwardState& s);

}  // namespace mf
