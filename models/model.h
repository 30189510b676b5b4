// A loaded model: hyperparameters, tokenizer vocabulary, chat template text, and the weights
// uploaded once to a backend. Weight shapes are checked against the hyperparameters at load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/gguf.h"
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
    // wq, wk and wv (and bq, bk, bv) stacked into one matrix when the file gives them one type, so
    // a step runs one matmul instead of three; wq, wk and wv are then views of its rows. Likewise
    // ffn_gate and ffn_up. Null when not stacked (types differ, or deepseek2).
    Tensor* wqkv = nullptr;         // [n_embd, q_dim + k_dim + v_dim]: rows of wq, then wk, then wv
    Tensor* bqkv = nullptr;         // [q_dim + k_dim + v_dim], with wqkv when the biases exist
    Tensor* ffn_gate_up = nullptr;  // [n_embd, 2 * n_ff]: rows of ffn_gate, then ffn_up
    // gemma3 only: per-head RMSNorm of q and k, and norms of the attention and FFN outputs before
    // each residual add.
    Tensor* attn_q_norm = nullptr;          // [head_dim_k]
    Tensor* attn_k_norm = nullptr;          // [head_dim_k]
    Tensor* post_attention_norm = nullptr;  // [n_embd]
    Tensor* post_ffw_norm = nullptr;        // [n_embd]
    // deepseek2 MLA (wq is [n_embd, n_head * head_dim_k_mla] there, wo [n_head * head_dim_v_mla, n_embd]):
    Tensor* wq_a = nullptr;            // [n_embd, q_lora_rank], with q_lora_rank (wq null then)
    Tensor* attn_q_a_norm = nullptr;   // [q_lora_rank]
    Tensor* wq_b = nullptr;            // [q_lora_rank, n_head * head_dim_k_mla]
    Tensor* wkv_a_mqa = nullptr;       // [n_embd, kv_lora_rank + n_rot]: c_kv, then the shared k_pe
    Tensor* wq_kv_a = nullptr;         // rows of wq (or wq_a), then wkv_a_mqa, when they share a type
    Tensor* attn_kv_a_norm = nullptr;  // [kv_lora_rank]
    Tensor* wk_b = nullptr;            // [qk_nope, kv_lora_rank, n_head]: W_UK per head, transposed
    Tensor* wv_b = nullptr;            // [kv_lora_rank, head_dim_v_mla, n_head]: W_UV per head
    Tensor* wkv_b = nullptr;           // [kv_lora_rank, n_head * (qk_nope + head_dim_v_mla)], older files
    // Mixture of experts (deepseek2 layers il >= n_layer_dense_lead; ffn_gate/up/down null there):
    Tensor* ffn_gate_inp = nullptr;     // [n_embd, n_expert] router
    Tensor* ffn_exp_probs_b = nullptr;  // [n_expert] selection bias, or null
    Tensor* ffn_gate_exps = nullptr;    // [n_embd, n_ff_exp, n_expert]
    Tensor* ffn_up_exps = nullptr;      // [n_embd, n_ff_exp, n_expert]
    Tensor* ffn_gate_up_exps = nullptr;  // [n_embd, 2 n_ff_exp, n_expert]: each expert's gate rows, then up's
    Tensor* ffn_down_exps = nullptr;    // [n_ff_exp, n_embd, n_expert]
    Tensor* ffn_gate_shexp = nullptr;   // [n_embd, n_ff_exp * n_expert_shared], or null
    Tensor* ffn_up_shexp = nullptr;     // [n_embd, n_ff_exp * n_expert_shared], or null
    Tensor* ffn_down_shexp = nullptr;   // [n_ff_exp * n_expert_shared, n_embd], or null
    Tensor* ffn_gate_up_shexp = nullptr;  // rows of ffn_gate_shexp, then ffn_up_shexp, when one type
};

struct Model {
    std::string path;
    HParams hp;
    Vocab vocab;
    std::string chat_template;    // tokenizer.chat_template, or "" when the file has none
    Backend* backend = nullptr;   // where the weights live
    Context ctx;                  // owns the weight tensors
    std::unique_ptr<Buffer> weight_buffer;
    // A backend that computes on host memory (the CPU) reads the file's tensors where the file is
    // mapped: file stays open and mapped_buffer (owning nothing) holds them; otherwise both are null.
    std::unique_ptr<GGUFFile> file;
    std::unique_ptr<Buffer> mapped_buffer;
    size_t weight_bytes = 0;
    size_t mapped_bytes = 0;  // of weight_bytes, those read in the mapping (the rest: computed at load)

    Tensor* tok_embd = nullptr;     // [n_embd, n_vocab]
    Tensor* output_norm = nullptr;  // [n_embd]
    Tensor* output = nullptr;       // [n_embd, n_vocab]; tok_embd when the embeddings are tied
    Tensor* rope_freqs = nullptr;   // [n_rot / 2] f32 frequency factors (Llama 3.1 rope scaling), or null
    std::vector<LayerWeights> layers;
};

// Where the weights live, for --verbose: "mapped from the file", "in <backend> memory", or how much of
// them is mapped when some were computed at load.
std::string weights_place(const Model& m);

// Loads path onto backend. Throws Error (one line naming the file and the key or tensor) on a file
// that is not GGUF, an unknown architecture, a missing key or tensor, or a tensor of the wrong shape.
std::unique_ptr<Model> load_model(const std::string& path, Backend& backend);

}  // namespace mf
