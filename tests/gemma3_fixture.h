// Test helpers for the gemma3 suites: the Gemma 3 270M path and a writer of tiny random gemma3
// GGUF files that a test can break one key or tensor at a time.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/gguf.h"
#include "model_fixture.h"

namespace mf_test {

// Gemma 3 270M Q4_K_M, fetched by `make model MODEL=gemma3` into MINFER_CACHE.
inline std::string gemma3_path() {
    const char* cache = std::getenv("MINFER_CACHE");
    const char* home = std::getenv("HOME");
    const std::string dir = cache ? cache : std::string(home ? home : ".") + "/.cache/minfer";
    return dir + "/gemma-3-270m-q4_k_m.gguf";
}

// A tiny random gemma3 GGUF. Six layers with no pattern key: Gemma 3's period of 6 makes layers 0-4
// local and layer 5 global. head_dim (key_length) differs from n_embd / n_head, as in Gemma 3.
struct TinyGemma3 {
    uint32_t n_embd = 48, n_layer = 6, n_head = 4, n_head_kv = 1, head_dim = 16, n_ff = 80, n_vocab = 40;
    uint32_t sliding_window = 5;
    float rope_scale_factor = 0.0f;                       // > 0: linear rope scaling with this factor
    std::map<std::string, mf::GGUFMetaValue> extra_kv;    // set or override keys
    std::vector<std::string> drop_tensors;                // tensors left out
    std::map<std::string, std::vector<int64_t>> reshape;  // tensors written with another shape

    void write(const std::string& path) {
        mf::GGUFWriter w;
        std::map<std::string, mf::GGUFMetaValue> kv;
        kv.emplace("general.architecture", mf::GGUFMetaValue::str("gemma3"));
        kv.emplace("gemma3.block_count", mf::GGUFMetaValue::u32(n_layer));
        kv.emplace("gemma3.embedding_length", mf::GGUFMetaValue::u32(n_embd));
        kv.emplace("gemma3.feed_forward_length", mf::GGUFMetaValue::u32(n_ff));
        kv.emplace("gemma3.attention.head_count", mf::GGUFMetaValue::u32(n_head));
        kv.emplace("gemma3.attention.head_count_kv", mf::GGUFMetaValue::u32(n_head_kv));
        kv.emplace("gemma3.attention.key_length", mf::GGUFMetaValue::u32(head_dim));
        kv.emplace("gemma3.attention.value_length", mf::GGUFMetaValue::u32(head_dim));
        kv.emplace("gemma3.context_length", mf::GGUFMetaValue::u32(256));
        kv.emplace("gemma3.attention.layer_norm_rms_epsilon", mf::GGUFMetaValue::f32(1e-6f));
        kv.emplace("gemma3.rope.freq_base", mf::GGUFMetaValue::f32(1e6f));
        kv.emplace("gemma3.attention.sliding_window", mf::GGUFMetaValue::u32(sliding_window));
        if (rope_scale_factor > 0) {
            kv.emplace("gemma3.rope.scaling.type", mf::GGUFMetaValue::str("linear"));
            kv.emplace("gemma3.rope.scaling.factor", mf::GGUFMetaValue::f32(rope_scale_factor));
        }
        std::vector<std::string> tokens = {"<pad>", "<eos>", "<bos>"};
        std::vector<float> scores = {0, 0, 0};
        std::vector<int32_t> types = {3, 3, 3};
        for (uint32_t i = 3; i < n_vocab; ++i) {
            tokens.push_back(std::string(1, char('a' + (i - 3) % 26)) + (i >= 29 ? "x" : ""));
            scores.push_back(-float(i));
            types.push_back(1);
        }
        kv.emplace("tokenizer.ggml.model", mf::GGUFMetaValue::str("llama"));
        kv.emplace("tokenizer.ggml.tokens", mf::GGUFMetaValue::array_str(tokens));
        kv.emplace("tokenizer.ggml.scores", mf::GGUFMetaValue::array_f32(scores));
        kv.emplace("tokenizer.ggml.token_type", mf::GGUFMetaValue::array_i32(types));
        kv.emplace("tokenizer.ggml.bos_token_id", mf::GGUFMetaValue::u32(2));
        kv.emplace("tokenizer.ggml.eos_token_id", mf::GGUFMetaValue::u32(1));
        for (auto& [k, v] : extra_kv) kv.erase(k), kv.emplace(k, v);
        for (auto& [k, v] : kv) w.set(k, v);

        auto add = [&](const std::string& name, std::vector<int64_t> ne, float scale) {
            if (std::find(drop_tensors.begin(), drop_tensors.end(), name) != drop_tensors.end()) return;
            if (reshape.count(name)) ne = reshape[name];
            int64_t n = 1;
            for (int64_t d : ne) n *= d;
            // scale 0: a norm weight holding Gemma's 1 + w, 1.05 +- 0.1 per channel
            data_.push_back(random_floats(size_t(n), scale == 0 ? -1.0f : -scale, scale == 0 ? 1.0f : scale));
            if (scale == 0.0f)
                for (auto& x : data_.back()) x = 1.0f + 0.1f * x + 0.05f;
            w.add_tensor(name, mf::DType::F32, int(ne.size()), ne.data(), data_.back().data());
        };
        const int64_t E = n_embd, q_dim = int64_t(n_head) * head_dim, kv_dim = int64_t(n_head_kv) * head_dim;
        add("token_embd.weight", {E, n_vocab}, 1.0f);  // tied: no output.weight
        add("output_norm.weight", {E}, 0.0f);
        for (uint32_t il = 0; il < n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            add(p + "attn_norm.weight", {E}, 0.0f);
            add(p + "attn_q.weight", {E, q_dim}, 0.3f);
            add(p + "attn_k.weight", {E, kv_dim}, 0.3f);
            add(p + "attn_v.weight", {E, kv_dim}, 0.3f);
            add(p + "attn_q_norm.weight", {head_dim}, 0.0f);
            add(p + "attn_k_norm.weight", {head_dim}, 0.0f);
            add(p + "attn_output.weight", {q_dim, E}, 0.2f);
            add(p + "post_attention_norm.weight", {E}, 0.0f);
            add(p + "ffn_norm.weight", {E}, 0.0f);
            add(p + "ffn_gate.weight", {E, n_ff}, 0.2f);
            add(p + "ffn_up.weight", {E, n_ff}, 0.2f);
            add(p + "ffn_down.weight", {n_ff, E}, 0.2f);
            add(p + "post_ffw_norm.weight", {E}, 0.0f);
        }
        w.write(path);
    }

private:
    std::vector<std::vector<float>> data_;
};

}  // namespace mf_test
