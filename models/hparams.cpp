// Hyperparameter loading from GGUF metadata, with the checks that keep a bad file from becoming a
// crash or a silent wrong answer later.
#include "models/hparams.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/common.h"
#include "core/gguf.h"

namespace mf {

namespace {

struct ArchInfo {
    const char* name;
    RopeMode rope_mode;
    bool qkv_bias;
};

// llama covers Llama 2/3, SmolLM and Mistral without sliding window.
const ArchInfo kArchs[] = {
    {"llama", ROPE_NORMAL, false},
    {"qwen2", ROPE_NEOX, true},
    {"gemma3", ROPE_NEOX, false},
    {"deepseek2", ROPE_NORMAL, false},  // llama.cpp's rope type NORM: the rope dims are interleaved pairs
};

// deepseek2: MLA (the latent cache geometry and the expanded per-head sizes), the experts, and the
// attention scale, which YaRN multiplies by mscale^2 as llama.cpp and transformers do.
void load_deepseek2(const GGUFFile& f, const std::string& a, HParams& hp,
                    const std::function<void(const std::string&, const char*)>& fail) {
    hp.kv_lora_rank = f.get_u32(a + "attention.kv_lora_rank");
    hp.q_lora_rank = f.get_u32(a + "attention.q_lora_rank", 0);
    if (hp.kv_lora_rank == 0 || hp.kv_lora_rank > 4096) fail(a + "attention.kv_lora_rank", "must be 1..4096");
    if (hp.q_lora_rank > 65536) fail(a + "attention.q_lora_rank", "must be at most 65536");
    if (f.has(a + "attention.key_length_mla") || f.has(a + "attention.value_length_mla")) {
        // Current llama.cpp files: key/value_length describe the latent rows, the _mla keys the heads.
        hp.head_dim_k_mla = f.get_u32(a + "attention.key_length_mla");
        hp.head_dim_v_mla = f.get_u32(a + "attention.value_length_mla");
        if (hp.head_dim_k != hp.kv_lora_rank + hp.n_rot)
            fail(a + "attention.key_length", "must be kv_lora_rank + rope.dimension_count in an MLA file");
        if (hp.head_dim_v != hp.kv_lora_rank) fail(a + "attention.value_length", "must be kv_lora_rank in an MLA file");
    } else {
        // Older files (one attn_kv_b per layer): key/value_length are the expanded head sizes.
        hp.head_dim_k_mla = hp.head_dim_k;
        hp.head_dim_v_mla = hp.head_dim_v;
        hp.head_dim_k = hp.kv_lora_rank + hp.n_rot;
        hp.head_dim_v = hp.kv_lora_rank;
    }
    if (hp.head_dim_k_mla <= hp.n_rot || hp.head_dim_k_mla > 1024)
        fail(a + "attention.key_length_mla", "must exceed rope.dimension_count and be at most 1024");
    if (hp.head_dim_v_mla == 0 || hp.head_dim_v_mla > 1024) fail(a + "attention.value_length_mla", "must be 1..1024");
    hp.n_head_kv.assign(hp.n_layer, 1);  // one latent row per token serves every head

    hp.n_expert = f.get_u32(a + "expert_count", 0);
    hp.n_layer_dense_lead = f.get_u32(a + "leading_dense_block_count", 0);
    if (hp.n_layer_dense_lead > hp.n_layer) fail(a + "leading_dense_block_count", "exceeds block_count");
    if (hp.n_expert > 0 && hp.n_layer_dense_lead < hp.n_layer) {
        hp.n_expert_used = f.get_u32(a + "expert_used_count");
        hp.n_expert_shared = f.get_u32(a + "expert_shared_count", 0);
        hp.n_ff_exp = f.get_u32(a + "expert_feed_forward_length");
        hp.expert_weights_scale = f.get_f32(a + "expert_weights_scale", 1.0f);
        hp.expert_weights_norm = f.get_bool(a + "expert_weights_norm", false);
        const uint32_t gating = f.get_u32(a + "expert_gating_func", 1);  // absent: softmax (V2 files)
        if (hp.n_expert > 1024) fail(a + "expert_count", "must be at most 1024");
        if (hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert) fail(a + "expert_used_count", "must be 1..expert_count");
        if (hp.n_ff_exp == 0) fail(a + "expert_feed_forward_length", "must be positive");
        if (!(hp.expert_weights_scale > 0.0f)) fail(a + "expert_weights_scale", "must be positive");
        if (gating != 1 && gating != 2) fail(a + "expert_gating_func", "must be 1 (softmax) or 2 (sigmoid)");
        hp.expert_gating = HParams::ExpertGating(gating);
    }

    float mscale = 1.0f;
    if (hp.yarn_factor > 1.0f) mscale = 1.0f + hp.yarn_log_mul * std::log(hp.yarn_factor);
    hp.kq_scale = mscale * mscale / std::sqrt(float(hp.head_dim_k_mla));
}

}  // namespace

const char* attn_kind_name(AttnKind k) {
    switch (k) {
        case AttnKind::MHA: return "MHA";
        case AttnKind::GQA: return "GQA";
        case AttnKind::MQA: return "MQA";
        case AttnKind::MLA: return "MLA";
    }
    return "?";
}

AttnKind HParams::attn_kind(uint32_t il) const {
    if (kv_lora_rank > 0) return AttnKind::MLA;
    const uint32_t kv = n_head_kv.at(il);
    if (kv == n_head) return AttnKind::MHA;
    if (kv == 1) return AttnKind::MQA;
    return AttnKind::GQA;
}

std::vector<float> yarn_freq_factors(const HParams& hp) {
    if (hp.yarn_factor == 0.0f) return {};
    // ggml's rope_yarn: pair i's angle is theta_extrap * (s (1 - mix) + mix), s = 1 / factor, mix =
    // ext_factor * ramp(i) between the correction dims; the ROPE op divides by the factor returned.
    const float n_dims = float(hp.n_rot), base = hp.rope_freq_base, s = 1.0f / hp.yarn_factor;
    const auto corr_dim = [&](float n_rot) {
        return n_dims * std::log(float(hp.yarn_n_ctx_orig) / (n_rot * 2.0f * float(M_PI))) / (2.0f * std::log(base));
    };
    const float low = std::max(0.0f, std::floor(corr_dim(hp.yarn_beta_fast)));
    const float high = std::min(n_dims - 1.0f, std::ceil(corr_dim(hp.yarn_beta_slow)));
    std::vector<float> out;
    for (uint32_t i = 0; i < hp.n_rot / 2; ++i) {
        const float y = (float(i) - low) / std::max(0.001f, high - low);
        const float mix = (1.0f - std::min(1.0f, std::max(0.0f, y))) * hp.yarn_ext_factor;
        out.push_back(1.0f / (s * (1.0f - mix) + mix));
    }
    return out;
}

std::string supported_architectures() {
    std::string s;
    for (const auto& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.name);
    return s;
}

HParams load_hparams(const GGUFFile& f) {
    HParams hp;
    hp.arch = f.get_str("general.architecture");
    const ArchInfo* info = nullptr;
    for (const auto& a : kArchs)
        if (hp.arch == a.name) info = &a;
    if (!info)
        throw Error(strfmt("%s: unknown architecture '%s' (supported: %s)", f.name().c_str(), hp.arch.c_str(),
                           supported_architectures().c_str()));
    hp.rope_mode = info->rope_mode;
    hp.qkv_bias = info->qkv_bias;

    const std::string a = hp.arch + ".";
    hp.n_layer = f.get_u32(a + "block_count");
    hp.n_embd = f.get_u32(a + "embedding_length");
    hp.n_ff = f.get_u32(a + "feed_forward_length");
    hp.n_head = f.get_u32(a + "attention.head_count");
    hp.n_ctx_train = f.get_u32(a + "context_length");
    hp.norm_eps = f.get_f32(a + "attention.layer_norm_rms_epsilon");
    hp.rope_freq_base = f.get_f32(a + "rope.freq_base", 10000.0f);

    auto fail = [&](const std::string& key, const char* why) {
        throw Error(strfmt("%s: metadata key '%s': %s", f.name().c_str(), key.c_str(), why));
    };
    if (hp.n_layer == 0 || hp.n_layer > 4096) fail(a + "block_count", "must be 1..4096");
    if (hp.n_embd == 0 || hp.n_embd > 65536) fail(a + "embedding_length", "must be 1..65536");
    if (hp.n_head == 0 || hp.n_head > 1024) fail(a + "attention.head_count", "must be 1..1024");
    if (hp.n_ff == 0) fail(a + "feed_forward_length", "must be positive");
    if (!(hp.norm_eps > 0.0f && hp.norm_eps < 1.0f)) fail(a + "attention.layer_norm_rms_epsilon", "must be in (0, 1)");
    if (!(hp.rope_freq_base > 0.0f)) fail(a + "rope.freq_base", "must be positive");

    const std::string kv_key = a + "attention.head_count_kv";
    const GGUFValue* kv = f.find(kv_key);
    if (!kv) {
        hp.n_head_kv.assign(hp.n_layer, hp.n_head);
    } else if (kv->is_array()) {
        std::vector<int32_t> v = kv->to_i32_vector();
        if (v.size() != hp.n_layer) fail(kv_key, "array length differs from block_count");
        for (int32_t x : v) hp.n_head_kv.push_back(uint32_t(x));
    } else {
        hp.n_head_kv.assign(hp.n_layer, kv->as_u32());
    }
    for (uint32_t x : hp.n_head_kv)
        if (x == 0 || x > hp.n_head || hp.n_head % x != 0)
            fail(kv_key, "must divide attention.head_count (each KV head serves a whole group of query heads)");

    if (hp.n_embd % hp.n_head != 0 && !f.has(a + "attention.key_length"))
        fail(a + "attention.key_length", "missing, and embedding_length is not a multiple of head_count");
    hp.head_dim_k = f.get_u32(a + "attention.key_length", hp.n_embd / hp.n_head);
    hp.head_dim_v = f.get_u32(a + "attention.value_length", hp.n_embd / hp.n_head);
    hp.n_rot = f.get_u32(a + "rope.dimension_count", hp.head_dim_k);
    if (hp.head_dim_k == 0 || hp.head_dim_k > 1024) fail(a + "attention.key_length", "must be 1..1024");
    if (hp.head_dim_v == 0 || hp.head_dim_v > 1024) fail(a + "attention.value_length", "must be 1..1024");
    if (hp.n_rot == 0 || hp.n_rot > hp.head_dim_k || hp.n_rot % 2) fail(a + "rope.dimension_count", "must be even and at most key_length");

    const std::string scaling = f.get_str(a + "rope.scaling.type", "none");
    if (scaling == "linear") {
        const float factor = f.get_f32(a + "rope.scaling.factor");
        if (!(factor > 0.0f)) fail(a + "rope.scaling.factor", "must be positive");
        hp.rope_freq_scale = 1.0f / factor;
    } else if (scaling == "yarn" && hp.arch == "deepseek2") {
        // As llama.cpp's deepseek2: the rotation keeps unit magnitude and the attention scale takes
        // mscale^2, mscale = 1 + yarn_log_multiplier * ln(factor) (transformers: mscale_all_dim).
        hp.yarn_factor = f.get_f32(a + "rope.scaling.factor");
        hp.yarn_n_ctx_orig = f.get_u32(a + "rope.scaling.original_context_length");
        hp.yarn_ext_factor = f.get_f32(a + "rope.scaling.yarn_ext_factor", 1.0f);
        hp.yarn_beta_fast = f.get_f32(a + "rope.scaling.yarn_beta_fast", 32.0f);
        hp.yarn_beta_slow = f.get_f32(a + "rope.scaling.yarn_beta_slow", 1.0f);
        hp.yarn_log_mul = f.get_f32(a + "rope.scaling.yarn_log_multiplier");
        if (!(hp.yarn_factor >= 1.0f)) fail(a + "rope.scaling.factor", "must be at least 1 for yarn");
        if (hp.yarn_n_ctx_orig == 0) fail(a + "rope.scaling.original_context_length", "must be positive");
        if (!(hp.yarn_ext_factor >= 0.0f && hp.yarn_ext_factor <= 1.0f)) fail(a + "rope.scaling.yarn_ext_factor", "must be in [0, 1]");
        if (!(hp.yarn_beta_fast > 0.0f && hp.yarn_beta_slow > 0.0f)) fail(a + "rope.scaling.yarn_beta_fast", "yarn betas must be positive");
        if (f.get_f32(a + "rope.scaling.yarn_attn_factor", 1.0f) != 1.0f)
            fail(a + "rope.scaling.yarn_attn_factor", "a yarn attention factor other than 1 is not supported");
    } else if (scaling != "none") {
        fail(a + "rope.scaling.type", ("rope scaling '" + scaling + "' is not supported (none, linear" +
                                       (hp.arch == "deepseek2" ? ", yarn)" : ")")).c_str());
    }
    const bool gemma3 = hp.arch == "gemma3";
    // As llama.cpp and Gemma's reference code: gemma3's local layers rope with base 10000 (unless
    // {arch}.rope.freq_base_swa says otherwise) and no scaling.
    hp.rope_freq_base_swa = f.get_f32(a + "rope.freq_base_swa", gemma3 ? 10000.0f : hp.rope_freq_base);
    hp.rope_freq_scale_swa = gemma3 ? 1.0f : hp.rope_freq_scale;
    if (!(hp.rope_freq_base_swa > 0.0f)) fail(a + "rope.freq_base_swa", "must be positive");
    if (gemma3) {
        // Queries are scaled by 1/sqrt(head_dim), except in the 27B (62 layers): 1/sqrt(n_embd / n_head).
        hp.kq_scale = 1.0f / std::sqrt(float(hp.n_layer == 62 ? hp.n_embd / hp.n_head : hp.head_dim_k));
        if (f.get_f32(a + "final_logit_softcapping", 0.0f) != 0.0f)
            fail(a + "final_logit_softcapping", "logit soft-capping is not supported");
    }

    if (hp.arch == "deepseek2") load_deepseek2(f, a, hp, fail);

    hp.sliding_window = f.get_u32(a + "attention.sliding_window", 0);
    hp.swa_layers.assign(hp.n_layer, false);
    if (hp.sliding_window > 0) {
        const std::string pat_key = a + "attention.sliding_window_pattern";
        const GGUFValue* pat = f.find(pat_key);
        if (pat && pat->is_array()) {
            const std::vector<uint8_t> v = pat->to_u8_vector();
            if (v.size() != hp.n_layer) fail(pat_key, "array length differs from block_count");
            for (uint32_t il = 0; il < hp.n_layer; ++il) hp.swa_layers[il] = v[il] != 0;
        } else {
            const uint32_t period = pat ? pat->as_u32() : hp.arch == "gemma3" ? 6 : 0;
            for (uint32_t il = 0; il < hp.n_layer; ++il) hp.swa_layers[il] = period == 0 || il % period < period - 1;
        }
    }
    HParams::KVMeta& km = hp.kv_meta;
    km.type_k = f.get_str("minfer.kv.type_k", "");
    km.type_v = f.get_str("minfer.kv.type_v", "");
    km.local_type_k = f.get_str("minfer.kv.local.type_k", "");
    km.local_type_v = f.get_str("minfer.kv.local.type_v", "");
    km.global_type_k = f.get_str("minfer.kv.global.type_k", "");
    km.global_type_v = f.get_str("minfer.kv.global.type_v", "");
    if (f.has("minfer.kv.window")) km.window = f.get_u32("minfer.kv.window");
    if (f.has("minfer.kv.sinks")) km.sinks = f.get_u32("minfer.kv.sinks");

    const GGUFValue* tokens = f.find("tokenizer.ggml.tokens");
    hp.n_vocab = f.get_u32(a + "vocab_size", tokens && tokens->is_array() ? uint32_t(tokens->size()) : 0);
    if (hp.n_vocab == 0) fail(a + "vocab_size", "missing, and the file has no tokenizer.ggml.tokens");
    return hp;
}

}  // namespace mf
