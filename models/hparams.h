// Hyperparameters of a transformer, read only from GGUF metadata, and the per-layer attention kind
// derived from them (MHA, GQA, MQA, MLA): nothing here is configured by hand.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mf {

class GGUFFile;

enum class AttnKind { MHA, GQA, MQA, MLA };
const char* attn_kind_name(AttnKind k);

struct HParams {
    std::string arch;             // general.architecture: "llama", "qwen2", "gemma3"
    uint32_t n_vocab = 0;
    uint32_t n_ctx_train = 0;     // {arch}.context_length
    uint32_t n_embd = 0;          // {arch}.embedding_length
    uint32_t n_layer = 0;         // {arch}.block_count
    uint32_t n_head = 0;          // {arch}.attention.head_count
    std::vector<uint32_t> n_head_kv;  // per layer; {arch}.attention.head_count_kv, scalar or array
    uint32_t n_ff = 0;            // {arch}.feed_forward_length
    uint32_t head_dim_k = 0;      // {arch}.attention.key_length, default n_embd / n_head
    uint32_t head_dim_v = 0;      // {arch}.attention.value_length, default n_embd / n_head
    uint32_t n_rot = 0;           // {arch}.rope.dimension_count, default head_dim_k
    RopeMode rope_mode = ROPE_NORMAL;  // by architecture: llama rotates pairs, qwen2 halves (NeoX)
    float rope_freq_base = 10000.0f;
    float rope_freq_scale = 1.0f;  // 1 / {arch}.rope.scaling.factor for linear scaling
    // RoPE of the sliding-window layers: the same as above, except gemma3 (local base 10000, unscaled).
    float rope_freq_base_swa = 10000.0f;  // {arch}.rope.freq_base_swa when the file has it
    float rope_freq_scale_swa = 1.0f;
    float kq_scale = 0.0f;         // attention scale; 0 = 1 / sqrt(head_dim_k) (gemma3 27B: 1 / sqrt(n_embd / n_head))
    float norm_eps = 1e-5f;        // {arch}.attention.layer_norm_rms_epsilon
    bool qkv_bias = false;         // qwen2: biases on the Q, K and V projections
    // MLA (deepseek2; 0 elsewhere). The cache geometry above is the latent one, as llama.cpp writes
    // it: head_dim_k = kv_lora_rank + n_rot, head_dim_v = kv_lora_rank, one KV head; the per-head
    // sizes of the expanded form are these two.
    uint32_t kv_lora_rank = 0;     // {arch}.attention.kv_lora_rank: the compressed KV latent c_kv
    uint32_t q_lora_rank = 0;      // {arch}.attention.q_lora_rank; 0 = plain attn_q
    uint32_t head_dim_k_mla = 0;   // {arch}.attention.key_length_mla: qk_nope + n_rot per query head
    uint32_t head_dim_v_mla = 0;   // {arch}.attention.value_length_mla: v_head_dim
    // YaRN rope scaling (deepseek2): pair i's angle is divided by yarn_freq_factors(hp)[i] and the
    // attention scale carries mscale^2 (kq_scale); 0 = none.
    float yarn_factor = 0.0f;           // {arch}.rope.scaling.factor
    uint32_t yarn_n_ctx_orig = 0;       // {arch}.rope.scaling.original_context_length
    float yarn_ext_factor = 1.0f;       // {arch}.rope.scaling.yarn_ext_factor
    float yarn_beta_fast = 32.0f;       // {arch}.rope.scaling.yarn_beta_fast
    float yarn_beta_slow = 1.0f;        // {arch}.rope.scaling.yarn_beta_slow
    float yarn_log_mul = 0.0f;          // {arch}.rope.scaling.yarn_log_multiplier (0.1 * mscale_all_dim)

    // Mixture of experts (deepseek2): 0 experts = a dense model.
    enum class ExpertGating { SOFTMAX = 1, SIGMOID = 2 };  // llama.cpp's expert_gating_func values
    uint32_t n_expert = 0;              // {arch}.expert_count
    uint32_t n_expert_used = 0;         // {arch}.expert_used_count: top-k
    uint32_t n_expert_shared = 0;       // {arch}.expert_shared_count
    uint32_t n_ff_exp = 0;              // {arch}.expert_feed_forward_length
    uint32_t n_layer_dense_lead = 0;    // {arch}.leading_dense_block_count: the first layers are dense
    float expert_weights_scale = 1.0f;  // {arch}.expert_weights_scale
    bool expert_weights_norm = false;   // {arch}.expert_weights_norm: renormalize the top-k weights
    ExpertGating expert_gating = ExpertGating::SOFTMAX;  // {arch}.expert_gating_func

    // Sliding-window attention: {arch}.attention.sliding_window (0 = none) and which layers use it,
    // from {arch}.attention.sliding_window_pattern (scalar period P: every P-th layer is global; or a
    // bool per layer, true = local). Without a pattern every layer is local (Mistral), except that
    // Gemma 3 files lacking the key use Gemma 3's period of 6.
    uint32_t sliding_window = 0;
    std::vector<bool> swa_layers;  // per layer; all false when sliding_window == 0

    // The cache settings a converted file may carry (minfer.kv.*, docs/GGUF.md); "" / -1 = unset.
    struct KVMeta {
        std::string type_k, type_v;               // minfer.kv.type_k / type_v: f16, q8_0, q4_0
        std::string local_type_k, local_type_v;   // minfer.kv.local.type_k / type_v: windowed layers
        std::string global_type_k, global_type_v; // minfer.kv.global.type_k / type_v: full layers
        int64_t window = -1;                      // minfer.kv.window: tokens, 0 = full
        int64_t sinks = -1;                       // minfer.kv.sinks
    } kv_meta;

    // head_count_kv == head_count: MHA; == 1: MQA; in between: GQA; kv_lora_rank set: MLA.
    AttnKind attn_kind(uint32_t il) const;
};

// Reads and checks the hyperparameters; throws Error naming a missing or inconsistent key, or the
// architecture when minfer does not know it.
HParams load_hparams(const GGUFFile& file);

// YaRN's per-pair frequency divisors [n_rot / 2] for the ROPE op (ggml's ramp between the
// beta_fast/beta_slow correction dims, freq_scale folded in); empty when hp.yarn_factor is 0.
std::vector<float> yarn_freq_factors(const HParams& hp);

// The architectures load_hparams accepts, for messages ("llama, qwen2").
std::string supported_architectures();

}  // namespace mf
