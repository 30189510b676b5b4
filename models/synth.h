// Synthetic models: GGUF files with seeded random weights in the exact shape of a real model
// (Llama 3, SmolLM2, Qwen2, DeepSeek-V2-Lite) and an SPM vocabulary of its size, so speed work
// needs no download.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mf {

// deepseek2's latent attention (DeepSeek-V2's MLA, queries without a LoRA) and its experts, in
// llama.cpp's terms; kv_lora_rank 0: plain K/V heads instead.
struct SynthMLA {
    uint32_t kv_lora_rank = 0;        // the cache holds kv_lora_rank + n_rot values per token and layer
    uint32_t n_rot = 0;               // qk_rope_head_dim: the roped part of each query/key head
    uint32_t head_dim_nope = 0;       // qk_nope_head_dim: a query/key head is nope + n_rot values
    uint32_t head_dim_v = 0;          // v_head_dim
    uint32_t n_layer_dense_lead = 0;  // layers 0 .. this - 1 have the dense FFN (n_ff), later ones experts
    uint32_t n_expert = 0;            // routed experts; 0: every layer dense
    uint32_t n_expert_used = 0;       // experts each token is routed to (top-k)
    uint32_t n_expert_shared = 0;     // shared experts, written as one FFN of n_expert_shared * n_ff_exp
    uint32_t n_ff_exp = 0;            // hidden size of one expert
    float expert_weights_scale = 1.0f;
    bool expert_weights_norm = false;
    uint32_t expert_gating_func = 1;  // llama.cpp's numbering: 1 softmax, 2 sigmoid
    float yarn_factor = 0.0f;         // > 0: YaRN rope scaling of this factor
    uint32_t yarn_n_ctx_orig = 0;     // YaRN's original context length
    float yarn_log_mul = 0.0f;        // 0.1 * mscale_all_dim: the attention scale's YaRN term
};

// A model's dimensions as synth writes them: a table shape's, or another model's (attn-lab -m).
struct SynthDims {
    std::string arch = "llama";  // general.architecture: "llama", "qwen2", or "deepseek2" (with mla)
    uint32_t n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0, n_vocab = 0, n_ctx_train = 0;
    float rope_freq_base = 10000.0f;
    float norm_eps = 1e-5f;
    bool tied = false;     // no output.weight: the token embedding is also the output matrix
    bool qkv_bias = false; // attn_{q,k,v}.bias tensors (qwen2)
    SynthMLA mla;          // an MLA shape's attention and experts (deepseek-v2-lite); else none
};

// MLA as written for an attention variant (DeepSeek-V2's latent attention, a deepseek2 file, every
// layer dense): rope dims min(64, head_dim / 2), per-head q/k size head_dim (nope = head_dim - rope
// dims), value size head_dim, no q_lora; the same hidden size, heads and FFN as the base.
uint32_t synth_mla_rope_dims(uint32_t head_dim);

struct SynthOptions {
    std::string shape;          // a name from synth_shape_names(), e.g. "llama-1b" (or empty with dims)
    std::optional<SynthDims> dims;  // when set, these dimensions instead of a table shape
    uint32_t n_head_kv = 0;     // 0: the shape's own KV head count; else a divisor of n_head (MHA/GQA/MQA)
    uint32_t kv_lora_rank = 0;  // > 0: MLA of this latent rank instead of K/V heads (a deepseek2 file;
                                // not for a shape that has MLA already)
    std::string type;           // the weight matrices' type, a name from synth_type_names(), e.g. "q4_0"
    std::string path;           // the GGUF file to write (replaced if it exists)
    uint64_t seed = 1;          // equal options give equal bytes, whatever n_threads is
    uint32_t n_layer = 0;       // 0: the shape's own layer count; else 1..4096
    int n_threads = 0;          // <= 0: every hardware thread
    // Called once per notice before any weight is drawn, e.g. tensors whose rows a K-quant cannot
    // hold and that are written as q8_0 instead.
    std::function<void(const std::string& notice)> on_notice;
    // Called after each tensor is generated and written (done = 1 .. total).
    std::function<void(size_t done, size_t total)> on_progress;
};

struct SynthSummary {
    size_t n_tensors = 0;
    uint64_t n_params = 0;   // elements over all tensors
    uint64_t file_bytes = 0; // size of the written file
};

// The shapes write_synth_model knows, in table order: "llama-1b", "llama-8b", ...
std::vector<std::string> synth_shape_names();
// The weight types it writes: "f32", "f16", "bf16", "q8_0", "q4_0", ...
std::vector<std::string> synth_type_names();
// One line per shape for a tool's help: name, the model it mirrors, and its dimensions.
std::string synth_shapes_help();

// The dimensions of a table shape; throws Error on an unknown name (listing the choices).
SynthDims synth_shape_dims(const std::string& shape);

// Writes opts.path: llama.cpp's metadata keys and tensor names for the shape, the matrices and the
// token embedding in opts.type (q8_0 where the type's blocks do not divide a row, f16 where q8_0's
// do not either; an MLA variant drops qwen2's QKV biases), norm weights ~1, biases and expert
// routers in f32. An MoE shape's n_layer layers keep its leading dense ones, the rest have experts.
// Memory stays near 64 MiB (one chunk of rows) whatever the model's size: the file is laid out
// first, then the weights are written in place. Throws Error on an unknown shape or type (listing
// the choices), a bad layer count, KV head count or latent rank, or an I/O failure (a partial
// file is removed).
SynthSummary write_synth_model(const SynthOptions& opts);

}  // namespace mf
