// Test helpers for the model suites: the default model's path and a writer of tiny random llama
// GGUF files (with an SPM vocabulary) that a test can break one key or tensor at a time.
#pragma once

#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/gguf.h"
#include "test_util.h"

namespace mf_test {

// SmolLM2-135M-Instruct Q4_1, fetched by `make model` into MINFER_CACHE (default ~/.cache/minfer).
inline std::string smollm2_path() {
    const char* cache = std::getenv("MINFER_CACHE");
    const char* home = std::getenv("HOME");
    const std::string dir = cache ? cache : std::string(home ? home : ".") + "/.cache/minfer";
    return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

struct TinyLlama {
    std::string arch = "llama";
    uint32_t n_embd = 64, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 96, n_vocab = 40;
    std::map<std::string, mf::GGUFMetaValue> extra_kv;  // set or override keys
    std::vector<std::string> drop_keys;                 // keys left out
    std::vector<std::string> drop_tensors;              // tensors left out
    std::map<std::string, std::vector<int64_t>> reshape;  // tensors written with another shape
    bool rope_freqs = false;  // write Llama 3.1-style frequency factors (rope_freqs.weight)

    // Writes the file; the weights are random, small enough that activations stay finite.
    void write(const std::string& path) {
        mf::GGUFWriter w;
        std::map<std::string, mf::GGUFMetaValue> kv;
        kv.emplace("general.architecture", mf::GGUFMetaValue::str(arch));
        const std::string a = arch + ".";
        kv.emplace(a + "block_count", mf::GGUFMetaValue::u32(n_layer));
        kv.emplace(a + "embedding_length", mf::GGUFMetaValue::u32(n_embd));
        kv.emplace(a + "feed_forward_length", mf::GGUFMetaValue::u32(n_ff));
        kv.emplace(a + "attention.head_count", mf::GGUFMetaValue::u32(n_head));
        kv.emplace(a + "attention.head_count_kv", mf::GGUFMetaValue::u32(n_head_kv));
        kv.emplace(a + "context_length", mf::GGUFMetaValue::u32(256));
        kv.emplace(a + "attention.layer_norm_rms_epsilon", mf::GGUFMetaValue::f32(1e-5f));
        kv.emplace(a + "rope.freq_base", mf::GGUFMetaValue::f32(10000.0f));
        std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
        std::vector<float> scores = {0, 0, 0};
        std::vector<int32_t> types = {2, 3, 3};
        for (uint32_t i = 3; i < n_vocab; ++i) {
            tokens.push_back(std::string(1, char('a' + (i - 3) % 26)) + (i >= 29 ? "x" : ""));
            scores.push_back(-float(i));
            types.push_back(1);
        }
        kv.emplace("tokenizer.ggml.model", mf::GGUFMetaValue::str("llama"));
        kv.emplace("tokenizer.ggml.tokens", mf::GGUFMetaValue::array_str(tokens));
        kv.emplace("tokenizer.ggml.scores", mf::GGUFMetaValue::array_f32(scores));
        kv.emplace("tokenizer.ggml.token_type", mf::GGUFMetaValue::array_i32(types));
        kv.emplace("tokenizer.ggml.bos_token_id", mf::GGUFMetaValue::u32(1));
        kv.emplace("tokenizer.ggml.eos_token_id", mf::GGUFMetaValue::u32(2));
        kv.emplace("tokenizer.ggml.unknown_token_id", mf::GGUFMetaValue::u32(0));
        for (auto& [k, v] : extra_kv) kv.erase(k), kv.emplace(k, v);
        for (auto& k : drop_keys) kv.erase(k);
        for (auto& [k, v] : kv) w.set(k, v);

        const int64_t hd = n_embd / n_head;
        auto add = [&](const std::string& name, std::vector<int64_t> ne, float scale) {
            for (auto& d : drop_tensors)
                if (d == name) return;
            if (reshape.count(name)) ne = reshape[name];
            int64_t n = 1;
            for (int64_t d : ne) n *= d;
            // scale 0: a norm weight, 1.05 +- 0.1 (varied per channel as in real models, so normalized
            // activations are not all one multiple of the input)
            data_.push_back(scale == 0.0f ? random_floats(size_t(n)) : random_floats(size_t(n), -scale, scale));
            if (scale == 0.0f)
                for (auto& x : data_.back()) x = 1.0f + 0.1f * x + 0.05f;
            w.add_tensor(name, mf::DType::F32, int(ne.size()), ne.data(), data_.back().data());
        };
        add("token_embd.weight", {n_embd, n_vocab}, 1.0f);
        add("output_norm.weight", {n_embd}, 0.0f);
        add("output.weight", {n_embd, n_vocab}, 0.3f);
        if (rope_freqs) {
            add("rope_freqs.weight", {hd / 2}, 1.0f);
            for (auto& f : data_.back()) f = 4.5f + 3.5f * f;  // factors in [1, 8)
        }
        for (uint32_t il = 0; il < n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            add(p + "attn_norm.weight", {n_embd}, 0.0f);
            add(p + "attn_q.weight", {n_embd, n_head * hd}, 0.3f);
            add(p + "attn_k.weight", {n_embd, n_head_kv * hd}, 0.3f);
            add(p + "attn_v.weight", {n_embd, n_head_kv * hd}, 0.3f);
            if (arch == "qwen2") {
                add(p + "attn_q.bias", {n_head * hd}, 0.3f);
                add(p + "attn_k.bias", {n_head_kv * hd}, 0.3f);
                add(p + "attn_v.bias", {n_head_kv * hd}, 0.3f);
            }
            add(p + "attn_output.weight", {n_head * hd, n_embd}, 0.2f);
            add(p + "ffn_norm.weight", {n_embd}, 0.0f);
            add(p + "ffn_gate.weight", {n_embd, n_ff}, 0.2f);
            add(p + "ffn_up.weight", {n_embd, n_ff}, 0.2f);
            add(p + "ffn_down.weight", {n_ff, n_embd}, 0.2f);
        }
        w.write(path);
    }

private:
    std::vector<std::vector<float>> data_;
};

inline std::string temp_path(const std::string& name) {
    const char* tmp = std::getenv("TMPDIR");
    return std::string(tmp ? tmp : "/tmp") + "/minfer_test_" + std::to_string(seed()) + "_" + name;
}

}  // namespace mf_test
