// A loaded model: hyperparameters, tokenizer vocabulary, chat template text, and the weights
// uploaded once to a backend. Weight shapes are checked against the hyperparameters at load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/tensor.h"
#include "models/hparams.h"
#include "models/vocab.h"

namespace mf {

struct LayerWeights {
    Tensor* attn_norm = nullptr;  // [n_embd]
    Tensor* wq = nullptr;         // [n_embd, n_head * head_dim_k]
    Tensor* wk = nullptr;         // [n_embd, n_head_kv * head_dim_k]
    Tensor* wv = nullptr;         // [n_embd, n_head_kv * head_dim_v]
    Tensor* bq = nullptr;         // [n_head * head_dim_k], qwen2 only
    Tensor* bk = nullptr;         // [n_head_kv * head_dim_k], qwen2 only
    Tensor* bv = nullptr;         // [n_head_kv * head_dim_v], qwen2 only
    Tensor* wo = nullptr;         // [n_head * head_dim_v, n_embd]
    Tensor* ffn_norm = nullptr;   // [n_embd]
    Tensor* ffn_gate = nullptr;   // [n_embd, n_ff]
    Tensor* ffn_up = nullptr;     // [n_embd, n_ff]
    Tensor* ffn_down = nullptr;   // [n_ff, n_embd]
    // gemma3 only: per-head RMSNorm of q and k, and norms of the attention and FFN outputs before
    // each residual add.
    Tensor* attn_q_norm = nullptr;          // [head_dim_k]
    Tensor* attn_k_norm = nullptr;          // [head_dim_k]
    Tensor* post_attention_norm = nullptr;  // [n_embd]
    Tensor* post_ffw_norm = nullptr;        // [n_embd]
};

struct Model {
    std::string path;
    HParams hp;
    Vocab vocab;
    std::string chat_template;    // tokenizer.chat_template, or "" when the file has none
    Backend* backend = nullptr;   // where the weights live
    Context ctx;                  // owns the weight tensors
    std::unique_ptr<Buffer> weight_buffer;
    size_t weight_bytes = 0;

    Tensor* tok_embd = nullptr;     // [n_embd, n_vocab]
    Tensor* output_norm = nullptr;  // [n_embd]
    Tensor* output = nullptr;       // [n_embd, n_vocab]; tok_embd when the embeddings are tied
    Tensor* rope_freqs = nullptr;   // [n_rot / 2] f32 frequency factors (Llama 3.1 rope scaling), or null
    std::vector<LayerWeights> layers;
};

// Loads path onto backend. Throws Error (one line naming the file and the key or tensor) on a file
// that is not GGUF, an unknown architecture, a missing key or tensor, or a tensor of the wrong shape.
std::unique_ptr<Model> load_model(const std::string& path, Backend& backend);

}  // namespace mf
