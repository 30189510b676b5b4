// Per-architecture conversion plans: config.json -> llama.cpp's metadata keys, and HF tensor names ->
// llama.cpp's tensor names and layouts (Q/K rotary permutation, Gemma's norm shift, DeepSeek experts).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/common.h"
#include "models/convert_arch.h"

namespace mf {

namespace {

using Json = nlohmann::json;

std::string esc(const std::string& s) { return gguf_escape(s, 200); }

// config.json with typed getters: a missing or null key takes the default transformers' config
// class gives it; a present key of the wrong type is an error naming it.
class Config {
public:
    explicit Config(const std::string& dir) : path_(dir + "/config.json") {
        std::ifstream in(path_, std::ios::binary);
        if (!in) throw Error(path_ + ": missing (not a Hugging Face checkpoint folder?)");
        std::stringstream ss;
        ss << in.rdbuf();
        const std::string text = ss.str();
        check_json_depth(text.data(), text.data() + text.size(), path_);
        try {
            j_ = Json::parse(text);
        } catch (const Json::exception& e) {
            throw Error(path_ + ": not valid JSON: " + esc(e.what()));
        }
        if (!j_.is_object()) throw Error(path_ + ": not a JSON object");
    }

    const std::string& path() const { return path_; }
    bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
    bool is_null(const char* key) const { return j_.contains(key) && j_[key].is_null(); }
    const Json& at(const char* key) const { return j_[key]; }

    int64_t i(const char* key) const {
        if (!has(key)) throw Error(path_ + ": missing '" + key + "'");
        return integer(key, j_[key]);
    }
    int64_t i(const char* key, int64_t fallback) const { return has(key) ? integer(key, j_[key]) : fallback; }
    double f(const char* key, double fallback) const {
        if (!has(key)) return fallback;
        if (!j_[key].is_number()) throw Error(path_ + ": '" + key + "' is not a number");
        return j_[key].get<double>();
    }
    bool b(const char* key, bool fallback) const {
        if (!has(key)) return fallback;
        if (!j_[key].is_boolean()) throw Error(path_ + ": '" + key + "' is not true or false");
        return j_[key].get<bool>();
    }
    std::string s(const char* key, const std::string& fallback) const {
        if (!has(key)) return fallback;
        if (!j_[key].is_string()) throw Error(path_ + ": '" + key + "' is not a string");
        return j_[key].get<std::string>();
    }
    // The RoPE settings: rope_parameters (transformers 5) or rope_scaling, the full-attention
    // entry where it is split by layer type; an empty object when there are none.
    Json rope(const char* part = "full_attention") const {
        Json r = has("rope_parameters") ? j_["rope_parameters"] : has("rope_scaling") ? j_["rope_scaling"] : Json::object();
        if (!r.is_object()) throw Error(path_ + ": rope_scaling is not a JSON object");
        if (r.contains("full_attention") || r.contains("sliding_attention"))
            r = r.contains(part) && r[part].is_object() ? r[part] : Json::object();
        return r;
    }

private:
    int64_t integer(const char* key, const Json& v) const {
        if (!v.is_number_integer() || v.get<int64_t>() < 0)
            throw Error(path_ + ": '" + key + "' is not a non-negative integer");
        return v.get<int64_t>();
    }
    std::string path_;
    Json j_;
};

double rope_number(const Config& c, const Json& r, const char* key, double fallback) {
    if (!r.contains(key) || r[key].is_null()) return fallback;
    if (!r[key].is_number()) throw Error(c.path() + ": rope_scaling." + key + " is not a number");
    return r[key].get<double>();
}

std::string rope_type(const Json& r) {
    for (const char* k : {"rope_type", "type"})
        if (r.contains(k) && r[k].is_string()) return r[k].get<std::string>();
    return "";
}

// Reads HF tensors by name, checks shapes against the config, and records every name it consumed
// so that finish() can refuse a checkpoint holding tensors the plan does not place.
class Planner {
public:
    Planner(ConvertPlan& plan, const Config& cfg) : plan_(plan), cfg_(cfg) {}

    void kv(const std::string& key, GGUFMetaValue v) {
        for (auto& p : plan_.kv)
            if (p.first == key) return void(p.second = std::move(v));
        plan_.kv.emplace_back(key, std::move(v));
    }
    void u32(const std::string& key, int64_t v) {
        if (v < 0 || v > int64_t(UINT32_MAX)) throw Error(strfmt("%s: value %lld for %s is out of range", cfg_.path().c_str(), (long long)v, key.c_str()));
        kv(plan_.arch + "." + key, GGUFMetaValue::u32(uint32_t(v)));
    }
    void f32(const std::string& key, double v) { kv(plan_.arch + "." + key, GGUFMetaValue::f32(float(v))); }
    void str(const std::string& key, const std::string& v) { kv(plan_.arch + "." + key, GGUFMetaValue::str(v)); }
    void boolean(const std::string& key, bool v) { kv(plan_.arch + "." + key, GGUFMetaValue::boolean(v)); }

    // The HF tensor called name with exactly this shape (HF order), or null when absent.
    const SafetensorsTensor* maybe(const std::string& name, const std::vector<int64_t>& shape) {
        const SafetensorsTensor* t = plan_.checkpoint->find(name);
        if (!t) return nullptr;
        if (t->shape != shape) {
            SafetensorsTensor want;
            want.shape = shape;
            throw Error(strfmt("%s: tensor '%s' has shape %s, but %s implies %s", t->file->c_str(), esc(name).c_str(),
                               t->shape_str().c_str(), cfg_.path().c_str(), want.shape_str().c_str()));
        }
        DType dt;
        if (!t->float_type(&dt))
            throw Error(strfmt("%s: tensor '%s' has dtype %s; minfer convert reads F32, F16 and BF16 tensors",
                               t->file->c_str(), esc(name).c_str(), esc(t->dtype).c_str()));
        used_.insert(name);
        return t;
    }
    const SafetensorsTensor& need(const std::string& name, const std::vector<int64_t>& shape) {
        const SafetensorsTensor* t = maybe(name, shape);
        if (!t)
            throw Error(strfmt("%s: the checkpoint lacks tensor '%s'", plan_.checkpoint->files().front().c_str(),
                               esc(name).c_str()));
        return *t;
    }
    void ignore(const std::string& name) { used_.insert(name); }

    // Adds `name` with the rows of t (1-D: one row; 2-D [out, in]: ne = {in, out}). src_row maps an
    // output row to the checkpoint's row; shift is added to every value (Gemma's norms); n_rows < 0
    // keeps every row, else the first n_rows.
    ConvertTensor& add(const std::string& name, const SafetensorsTensor& t, bool keep_f32 = false,
                       std::function<int64_t(int64_t)> src_row = nullptr, float shift = 0.0f, int64_t n_rows = -1) {
        ConvertTensor out;
        out.name = name;
        out.keep_f32 = keep_f32 || t.shape.size() == 1;
        const int64_t ne0 = t.shape.back();
        if (t.shape.size() == 1) {
            out.n_dims = 1;
            out.ne[0] = ne0;
        } else {
            out.n_dims = 2;
            out.ne[0] = ne0;
            out.ne[1] = n_rows >= 0 ? n_rows : t.shape[0];
        }
        const SafetensorsTensor* src = &t;
        const bool round_f16 = t.dtype == "F16";  // llama.cpp shifts F16 tensors in F16
        out.row = [src, ne0, src_row, shift, round_f16](int64_t r, float* dst) {
            src->read_f32(uint64_t(src_row ? src_row(r) : r) * uint64_t(ne0), uint64_t(ne0), dst);
            if (shift != 0.0f)
                for (int64_t i = 0; i < ne0; ++i)
                    dst[i] = round_f16 ? fp16_to_fp32(fp32_to_fp16(dst[i] + shift)) : dst[i] + shift;
        };
        plan_.tensors.push_back(std::move(out));
        return plan_.tensors.back();
    }

    // Refuses a checkpoint holding a tensor the plan did not consume.
    void finish(const std::function<bool(const std::string&)>& skippable) {
        for (const SafetensorsTensor* t : plan_.checkpoint->tensors()) {
            if (used_.count(t->name) || skippable(t->name)) continue;
            if (t->name.size() > 20 && t->name.compare(t->name.size() - 20, 20, ".rotary_emb.inv_freq") == 0) continue;
            throw Error(strfmt("%s: tensor '%s' is not part of a %s checkpoint as minfer convert knows it",
                               t->file->c_str(), esc(t->name).c_str(), plan_.hf_arch.c_str()));
        }
    }

    ConvertPlan& plan() { return plan_; }

private:
    ConvertPlan& plan_;
    const Config& cfg_;
    std::set<std::string> used_;
};

// llama.cpp's permutation of Q/K rows for its pairwise RoPE: HF's rotate-half layout pairs element
// i with i + head_dim/2 in each head; ggml's pairs 2i with 2i + 1. Output row r of a head reads
// HF row (r % 2) * head_dim/2 + (r % head_dim) / 2 of the same head.
std::function<int64_t(int64_t)> rope_permutation(int64_t head_dim) {
    return [head_dim](int64_t r) {
        const int64_t h = r / head_dim, rem = r % head_dim;
        return h * head_dim + (rem % 2) * (head_dim / 2) + rem / 2;
    };
}

// The keys llama.cpp's TextModel writes for every architecture.
struct Dims {
    int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, n_ctx, n_vocab, head_dim;
    double rope_theta, rms_eps;
};

void base_keys(Planner& p, const Config& c, const Dims& d, bool head_dim_keys) {
    p.u32("block_count", d.n_layer);
    p.u32("context_length", d.n_ctx);
    p.u32("embedding_length", d.n_embd);
    p.u32("feed_forward_length", d.n_ff);
    p.u32("attention.head_count", d.n_head);
    p.u32("attention.head_count_kv", d.n_head_kv);
    const Json r = c.rope();
    const std::string type = rope_type(r);
    if (type == "linear") {
        p.str("rope.scaling.type", "linear");
        p.f32("rope.scaling.factor", rope_number(c, r, "factor", 1.0));
    } else if (type == "yarn") {
        p.str("rope.scaling.type", "yarn");
        p.f32("rope.scaling.factor", rope_number(c, r, "factor", 1.0));
        if (!r.contains("original_max_position_embeddings") || !r["original_max_position_embeddings"].is_number_integer())
            throw Error(c.path() + ": yarn rope scaling without an integer original_max_position_embeddings");
        p.u32("rope.scaling.original_context_length", r["original_max_position_embeddings"].get<int64_t>());
        if (r.contains("extrapolation_factor")) p.f32("rope.scaling.yarn_ext_factor", rope_number(c, r, "extrapolation_factor", 1.0));
        for (const char* k : {"attention_factor", "attn_factor"})
            if (r.contains(k) && !r[k].is_null()) {
                p.f32("rope.scaling.yarn_attn_factor", rope_number(c, r, k, 1.0));
                break;
            }
        if (r.contains("beta_fast")) p.f32("rope.scaling.yarn_beta_fast", rope_number(c, r, "beta_fast", 32.0));
        if (r.contains("beta_slow")) p.f32("rope.scaling.yarn_beta_slow", rope_number(c, r, "beta_slow", 1.0));
    } else if (type == "su" || type == "longrope") {
        p.str("rope.scaling.type", "longrope");
    } else if (type == "llama3" && p.plan().arch == "llama") {
        // rope_freqs.weight carries it (plan_llama)
    } else if (!type.empty() && type != "default" && type != "dynamic") {
        throw Error(c.path() + ": rope scaling type '" + esc(type) + "' is not supported for " + p.plan().hf_arch +
                    " (default, linear, yarn, longrope, dynamic" + (p.plan().arch == "llama" ? ", llama3)" : ")"));
    }
    p.f32("rope.freq_base", d.rope_theta);
    p.f32("attention.layer_norm_rms_epsilon", d.rms_eps);
    if (head_dim_keys) {
        p.u32("attention.key_length", d.head_dim);
        p.u32("attention.value_length", d.head_dim);
    }
}

Dims read_dims(const Config& c, int64_t n_ctx_default, double theta_default, int64_t vocab_default) {
    Dims d;
    d.n_layer = c.i("num_hidden_layers");
    d.n_embd = c.i("hidden_size");
    d.n_ff = c.i("intermediate_size");
    d.n_head = c.i("num_attention_heads");
    d.n_head_kv = c.i("num_key_value_heads", d.n_head);
    d.n_ctx = c.i("max_position_embeddings", n_ctx_default);
    d.n_vocab = c.i("vocab_size", vocab_default);
    const Json r = c.rope();
    d.rope_theta = c.f("rope_theta", rope_number(c, r, "rope_theta", theta_default));
    d.rms_eps = c.f("rms_norm_eps", 1e-6);
    if (d.n_layer == 0 || d.n_embd == 0 || d.n_head == 0 || d.n_head_kv == 0 || d.n_vocab == 0 || d.n_ff == 0)
        throw Error(c.path() + ": a layer, embedding, head, vocabulary or feed-forward count is 0");
    if (d.n_head % d.n_head_kv != 0)
        throw Error(strfmt("%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                           c.path().c_str(), (long long)d.n_head, (long long)d.n_head_kv));
    if (!c.has("head_dim") && d.n_embd % d.n_head != 0)
        throw Error(c.path() + ": hidden_size is not a multiple of num_attention_heads and head_dim is missing");
    d.head_dim = c.i("head_dim", d.n_embd / d.n_head);
    if (d.head_dim == 0) throw Error(c.path() + ": head_dim is 0");
    return d;
}

std::string layer(int64_t il) { return "model.layers." + std::to_string(il) + "."; }
std::string blk(int64_t il) { return "blk." + std::to_string(il) + "."; }

// The token embedding (its first n_vocab_rows rows; all when negative), shared by every architecture.
void add_embeddings(Planner& p, const Dims& d, int64_t n_vocab_rows) {
    p.add("token_embd.weight", p.need("model.embed_tokens.weight", {d.n_vocab, d.n_embd}), false, nullptr, 0.0f,
          n_vocab_rows);
}

// The final norm and the output head (left out when the embeddings are tied).
void add_output(Planner& p, const Config& c, const Dims& d, bool tied_default, float norm_shift) {
    p.add("output_norm.weight", p.need("model.norm.weight", {d.n_embd}), true, nullptr, norm_shift);
    if (c.b("tie_word_embeddings", tied_default)) {
        p.ignore("lm_head.weight");
    } else {
        p.add("output.weight", p.need("lm_head.weight", {d.n_vocab, d.n_embd}));
    }
}

// Llama 3's frequency factors (rope_type "llama3"), computed as llama.cpp's converter does.
std::vector<float> llama3_rope_factors(const Config& c, const Json& r, double base, int64_t head_dim) {
    const double factor = rope_number(c, r, "factor", 8.0);
    const double low = rope_number(c, r, "low_freq_factor", 1.0);
    const double high = rope_number(c, r, "high_freq_factor", 4.0);
    // transformers reads the original context from rope_scaling; llama.cpp from the top level
    // (8192 for every Llama 3.x either way).
    const double old_ctx = rope_number(c, r, "original_max_position_embeddings",
                                       double(c.i("original_max_position_embeddings", 8192)));
    const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    std::vector<float> out;
    for (int64_t i = 0; i < head_dim; i += 2) {
        const float freq = 1.0f / std::pow(float(base), float(i) / float(head_dim));
        const double wavelen = 2.0 * 3.14159265358979323846 / double(freq);
        if (wavelen < high_wavelen) {
            out.push_back(1.0f);
        } else if (wavelen > low_wavelen) {
            out.push_back(float(factor));
        } else {
            const double smooth = (old_ctx / wavelen - low) / (high - low);
            out.push_back(float(1.0 / ((1.0 - smooth) / factor + smooth)));
        }
    }
    return out;
}

void plan_llama(Planner& p, const Config& c, bool mistral) {
    const Dims d = read_dims(c, mistral ? 4096 * 32 : 2048, 10000.0, 32000);
    base_keys(p, c, d, true);
    p.u32("vocab_size", d.n_vocab);
    p.u32("rope.dimension_count", d.head_dim);
    if (mistral && c.has("sliding_window")) p.u32("attention.sliding_window", c.i("sliding_window"));

    add_embeddings(p, d, -1);
    const Json r = c.rope();
    if (rope_type(r) == "llama3") {
        auto factors = std::make_shared<std::vector<float>>(llama3_rope_factors(c, r, d.rope_theta, d.head_dim));
        ConvertTensor t;
        t.name = "rope_freqs.weight";
        t.n_dims = 1;
        t.ne[0] = int64_t(factors->size());
        t.keep_f32 = true;
        t.row = [factors](int64_t, float* dst) { std::copy(factors->begin(), factors->end(), dst); };
        p.plan().tensors.push_back(std::move(t));
    }
    const int64_t q_dim = d.n_head * d.head_dim, kv_dim = d.n_head_kv * d.head_dim;
    const auto perm = rope_permutation(d.head_dim);
    for (int64_t il = 0; il < d.n_layer; ++il) {
        const std::string h = layer(il), b = blk(il);
        p.add(b + "attn_norm.weight", p.need(h + "input_layernorm.weight", {d.n_embd}));
        p.add(b + "attn_q.weight", p.need(h + "self_attn.q_proj.weight", {q_dim, d.n_embd}), false, perm);
        p.add(b + "attn_k.weight", p.need(h + "self_attn.k_proj.weight", {kv_dim, d.n_embd}), false, perm);
        p.add(b + "attn_v.weight", p.need(h + "self_attn.v_proj.weight", {kv_dim, d.n_embd}));
        // attention_bias / mlp_bias checkpoints: biases beside their weights, permuted like them
        if (auto* t = p.maybe(h + "self_attn.q_proj.bias", {q_dim})) p.add(b + "attn_q.bias", *t, true, nullptr).row =
            [t, perm, q_dim](int64_t, float* dst) { for (int64_t i = 0; i < q_dim; ++i) t->read_f32(uint64_t(perm(i)), 1, dst + i); };
        if (auto* t = p.maybe(h + "self_attn.k_proj.bias", {kv_dim})) p.add(b + "attn_k.bias", *t, true, nullptr).row =
            [t, perm, kv_dim](int64_t, float* dst) { for (int64_t i = 0; i < kv_dim; ++i) t->read_f32(uint64_t(perm(i)), 1, dst + i); };
        if (auto* t = p.maybe(h + "self_attn.v_proj.bias", {kv_dim})) p.add(b + "attn_v.bias", *t);
        p.add(b + "attn_output.weight", p.need(h + "self_attn.o_proj.weight", {d.n_embd, q_dim}));
        if (auto* t = p.maybe(h + "self_attn.o_proj.bias", {d.n_embd})) p.add(b + "attn_output.bias", *t);
        p.add(b + "ffn_norm.weight", p.need(h + "post_attention_layernorm.weight", {d.n_embd}));
        p.add(b + "ffn_gate.weight", p.need(h + "mlp.gate_proj.weight", {d.n_ff, d.n_embd}));
        if (auto* t = p.maybe(h + "mlp.gate_proj.bias", {d.n_ff})) p.add(b + "ffn_gate.bias", *t);
        p.add(b + "ffn_up.weight", p.need(h + "mlp.up_proj.weight", {d.n_ff, d.n_embd}));
        if (auto* t = p.maybe(h + "mlp.up_proj.bias", {d.n_ff})) p.add(b + "ffn_up.bias", *t);
        p.add(b + "ffn_down.weight", p.need(h + "mlp.down_proj.weight", {d.n_embd, d.n_ff}));
        if (auto* t = p.maybe(h + "mlp.down_proj.bias", {d.n_embd})) p.add(b + "ffn_down.bias", *t);
    }
    add_output(p, c, d, false, 0.0f);
    p.finish([](const std::string&) { return false; });
}

void plan_qwen2(Planner& p, const Config& c) {
    const Dims d = read_dims(c, 32768, 10000.0, 151936);
    base_keys(p, c, d, c.has("head_dim"));
    add_embeddings(p, d, -1);
    const int64_t q_dim = d.n_head * d.head_dim, kv_dim = d.n_head_kv * d.head_dim;
    for (int64_t il = 0; il < d.n_layer; ++il) {
        const std::string h = layer(il), b = blk(il);
        p.add(b + "attn_norm.weight", p.need(h + "input_layernorm.weight", {d.n_embd}));
        p.add(b + "attn_q.weight", p.need(h + "self_attn.q_proj.weight", {q_dim, d.n_embd}));
        p.add(b + "attn_q.bias", p.need(h + "self_attn.q_proj.bias", {q_dim}));
        p.add(b + "attn_k.weight", p.need(h + "self_attn.k_proj.weight", {kv_dim, d.n_embd}));
        p.add(b + "attn_k.bias", p.need(h + "self_attn.k_proj.bias", {kv_dim}));
        p.add(b + "attn_v.weight", p.need(h + "self_attn.v_proj.weight", {kv_dim, d.n_embd}));
        p.add(b + "attn_v.bias", p.need(h + "self_attn.v_proj.bias", {kv_dim}));
        p.add(b + "attn_output.weight", p.need(h + "self_attn.o_proj.weight", {d.n_embd, q_dim}));
        p.add(b + "ffn_norm.weight", p.need(h + "post_attention_layernorm.weight", {d.n_embd}));
        p.add(b + "ffn_gate.weight", p.need(h + "mlp.gate_proj.weight", {d.n_ff, d.n_embd}));
        p.add(b + "ffn_up.weight", p.need(h + "mlp.up_proj.weight", {d.n_ff, d.n_embd}));
        p.add(b + "ffn_down.weight", p.need(h + "mlp.down_proj.weight", {d.n_embd, d.n_ff}));
    }
    add_output(p, c, d, false, 0.0f);
    p.finish([](const std::string&) { return false; });
}

// The vocabulary rows llama.cpp keeps of Gemma 3's embedding: with only tokenizer.json, the model's
// tokens plus the added ones (the rest are out-of-vocabulary padding); every row otherwise.
int64_t gemma3_vocab_rows(const std::string& dir, int64_t n_vocab) {
    std::ifstream sp(dir + "/tokenizer.model");
    if (sp) return n_vocab;
    std::ifstream in(dir + "/tokenizer.json", std::ios::binary);
    if (!in) return n_vocab;
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    check_json_depth(text.data(), text.data() + text.size(), dir + "/tokenizer.json");
    const Json j = Json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("model") || !j["model"].is_object() ||
        !j["model"].contains("vocab"))
        throw Error(dir + "/tokenizer.json: no model.vocab to size Gemma 3's embedding by");
    int64_t n = int64_t(j["model"]["vocab"].size());
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) n += int64_t(j["added_tokens"].size());
    return std::min(n, n_vocab);
}

void plan_gemma3(Planner& p, const Config& c, const std::string& dir) {
    Dims d;
    d.n_layer = c.i("num_hidden_layers");
    d.n_embd = c.i("hidden_size");
    d.n_ff = c.i("intermediate_size");
    d.n_head = c.i("num_attention_heads", 8);
    d.n_head_kv = c.i("num_key_value_heads", 4);
    d.n_ctx = c.i("max_position_embeddings", 131072);
    d.n_vocab = c.i("vocab_size", 262208);
    d.head_dim = c.i("head_dim", 256);
    d.rope_theta = c.f("rope_theta", rope_number(c, c.rope(), "rope_theta", 1000000.0));
    d.rms_eps = c.f("rms_norm_eps", 1e-6);
    if (d.n_layer == 0 || d.n_embd == 0 || d.n_head == 0 || d.n_head_kv == 0 || d.head_dim == 0 ||
        d.n_head % d.n_head_kv != 0)
        throw Error(c.path() + ": inconsistent layer, embedding or head counts");
    if (c.has("attn_logit_softcapping")) throw Error(c.path() + ": attn_logit_softcapping is set, which Gemma 3 does not use");
    base_keys(p, c, d, true);
    const double swa_theta = c.has("rope_parameters") ? rope_number(c, c.rope("sliding_attention"), "rope_theta", 10000.0)
                                                      : c.f("rope_local_base_freq", 10000.0);
    p.f32("rope.freq_base_swa", swa_theta);
    if (c.f("final_logit_softcapping", 0.0) != 0.0) p.f32("final_logit_softcapping", c.f("final_logit_softcapping", 0.0));
    if (c.i("sliding_window_pattern", 6) != 1) p.u32("attention.sliding_window", c.i("sliding_window", 4096));

    add_embeddings(p, d, gemma3_vocab_rows(dir, d.n_vocab));
    const int64_t q_dim = d.n_head * d.head_dim, kv_dim = d.n_head_kv * d.head_dim;
    const auto norm = [&](const std::string& name, const std::string& hf, int64_t n) {
        p.add(name, p.need(hf, {n}), true, nullptr, 1.0f);  // Gemma3RMSNorm scales by 1 + weight
    };
    for (int64_t il = 0; il < d.n_layer; ++il) {
        const std::string h = layer(il), b = blk(il);
        norm(b + "attn_norm.weight", h + "input_layernorm.weight", d.n_embd);
        p.add(b + "attn_q.weight", p.need(h + "self_attn.q_proj.weight", {q_dim, d.n_embd}));
        norm(b + "attn_q_norm.weight", h + "self_attn.q_norm.weight", d.head_dim);
        p.add(b + "attn_k.weight", p.need(h + "self_attn.k_proj.weight", {kv_dim, d.n_embd}));
        norm(b + "attn_k_norm.weight", h + "self_attn.k_norm.weight", d.head_dim);
        p.add(b + "attn_v.weight", p.need(h + "self_attn.v_proj.weight", {kv_dim, d.n_embd}));
        p.add(b + "attn_output.weight", p.need(h + "self_attn.o_proj.weight", {d.n_embd, q_dim}));
        norm(b + "post_attention_norm.weight", h + "post_attention_layernorm.weight", d.n_embd);
        norm(b + "ffn_norm.weight", h + "pre_feedforward_layernorm.weight", d.n_embd);
        p.add(b + "ffn_gate.weight", p.need(h + "mlp.gate_proj.weight", {d.n_ff, d.n_embd}));
        p.add(b + "ffn_up.weight", p.need(h + "mlp.up_proj.weight", {d.n_ff, d.n_embd}));
        p.add(b + "ffn_down.weight", p.need(h + "mlp.down_proj.weight", {d.n_embd, d.n_ff}));
        norm(b + "post_ffw_norm.weight", h + "post_feedforward_layernorm.weight", d.n_embd);
    }
    add_output(p, c, d, true, 1.0f);
    p.finish([](const std::string&) { return false; });
}

// Experts e = 0 .. n-1 of one projection, each [rows, cols], stacked into ne = {cols, rows, n}.
void add_experts(Planner& p, const std::string& name, const std::string& h, const char* proj, int64_t n_expert,
                 int64_t rows, int64_t cols) {
    auto srcs = std::make_shared<std::vector<const SafetensorsTensor*>>();
    for (int64_t e = 0; e < n_expert; ++e)
        srcs->push_back(&p.need(h + "mlp.experts." + std::to_string(e) + "." + proj + ".weight", {rows, cols}));
    ConvertTensor t;
    t.name = name;
    t.n_dims = 3;
    t.ne[0] = cols;
    t.ne[1] = rows;
    t.ne[2] = n_expert;
    t.is_expert = true;
    t.row = [srcs, rows, cols](int64_t r, float* dst) {
        (*srcs)[size_t(r / rows)]->read_f32(uint64_t(r % rows) * uint64_t(cols), uint64_t(cols), dst);
    };
    p.plan().tensors.push_back(std::move(t));
}

void plan_deepseek2(Planner& p, const Config& c) {
    Dims d = read_dims(c, 2048, 10000.0, 102400);
    const int64_t n_head_kv_cfg = d.n_head_kv;
    d.n_head_kv = 1;  // MLA is written as MQA: one latent KV head (llama.cpp)
    const bool has_q_lora = !c.is_null("q_lora_rank");  // null: queries without a LoRA (V2-Lite)
    const int64_t q_lora = has_q_lora ? c.i("q_lora_rank", 1536) : 0;
    const int64_t kv_lora = c.i("kv_lora_rank", 512), rope_dim = c.i("qk_rope_head_dim", 64);
    const int64_t nope = c.i("qk_nope_head_dim", 128), v_dim = c.i("v_head_dim", 128);
    const bool moe = c.has("n_routed_experts");
    const int64_t n_expert = c.i("n_routed_experts", 0), n_shared = c.i("n_shared_experts", 0);
    const int64_t first_dense = c.i("first_k_dense_replace", moe ? 0 : d.n_layer);
    const int64_t moe_ff = moe ? c.i("moe_intermediate_size") : c.i("moe_intermediate_size", d.n_ff);
    if (c.i("moe_layer_freq", 1) != 1) throw Error(c.path() + ": moe_layer_freq other than 1 is not supported (llama.cpp's deepseek2 has none)");
    if (kv_lora == 0 || rope_dim == 0 || nope + v_dim == 0 || (moe && (n_expert == 0 || moe_ff == 0)))
        throw Error(c.path() + ": a zero MLA or expert dimension");

    base_keys(p, c, d, false);
    if (c.has("num_experts_per_tok")) p.u32("expert_used_count", c.i("num_experts_per_tok"));
    if (c.has("n_group")) p.u32("expert_group_count", c.i("n_group"));
    if (c.has("topk_group")) p.u32("expert_group_used_count", c.i("topk_group"));
    if (c.has("scoring_func")) {
        const std::string f = c.s("scoring_func", "");
        if (f != "softmax" && f != "sigmoid") throw Error(c.path() + ": scoring_func '" + esc(f) + "' is not softmax or sigmoid");
        p.u32("expert_gating_func", f == "softmax" ? 1 : 2);
    }
    p.u32("leading_dense_block_count", first_dense);
    p.u32("vocab_size", d.n_vocab);
    if (has_q_lora) p.u32("attention.q_lora_rank", q_lora);
    p.u32("attention.kv_lora_rank", kv_lora);
    p.u32("attention.key_length", kv_lora + rope_dim);
    p.u32("attention.value_length", kv_lora);
    p.u32("attention.key_length_mla", nope + rope_dim);
    p.u32("attention.value_length_mla", v_dim);
    p.u32("expert_feed_forward_length", moe_ff);
    if (moe) p.u32("expert_count", n_expert);
    p.u32("expert_shared_count", n_shared);
    p.f32("expert_weights_scale", c.f("routed_scaling_factor", 1.0));
    if (c.b("norm_topk_prob", false)) p.boolean("expert_weights_norm", true);
    p.u32("rope.dimension_count", rope_dim);
    const Json r = c.rope();
    if (r.contains("mscale_all_dim") && !r["mscale_all_dim"].is_null())
        p.f32("rope.scaling.yarn_log_multiplier", 0.1 * rope_number(c, r, "mscale_all_dim", 0.0));

    add_embeddings(p, d, -1);
    const int64_t q_rows = d.n_head * (nope + rope_dim);
    for (int64_t il = 0; il < d.n_layer; ++il) {
        const std::string h = layer(il), b = blk(il);
        p.add(b + "attn_norm.weight", p.need(h + "input_layernorm.weight", {d.n_embd}));
        if (has_q_lora) {
            p.add(b + "attn_q_a.weight", p.need(h + "self_attn.q_a_proj.weight", {q_lora, d.n_embd}));
            p.add(b + "attn_q_a_norm.weight", p.need(h + "self_attn.q_a_layernorm.weight", {q_lora}));
            p.add(b + "attn_q_b.weight", p.need(h + "self_attn.q_b_proj.weight", {q_rows, q_lora}));
        } else {
            p.add(b + "attn_q.weight", p.need(h + "self_attn.q_proj.weight", {q_rows, d.n_embd}));
        }
        p.add(b + "attn_kv_a_mqa.weight", p.need(h + "self_attn.kv_a_proj_with_mqa.weight", {kv_lora + rope_dim, d.n_embd}));
        p.add(b + "attn_kv_a_norm.weight", p.need(h + "self_attn.kv_a_layernorm.weight", {kv_lora}));
        // kv_b [n_head * (nope + v), kv_lora] splits per head into k_b (transposed: ne = {nope,
        // kv_lora, n_head}) and v_b (ne = {kv_lora, v, n_head}), as llama.cpp's MLA absorption wants.
        const SafetensorsTensor* kv_b = &p.need(h + "self_attn.kv_b_proj.weight", {n_head_kv_cfg * (nope + v_dim), kv_lora});
        ConvertTensor kb;
        kb.name = b + "attn_k_b.weight";
        kb.n_dims = 3;
        kb.ne[0] = nope, kb.ne[1] = kv_lora, kb.ne[2] = n_head_kv_cfg;
        kb.row = [kv_b, nope, v_dim, kv_lora](int64_t r, float* dst) {
            const int64_t head = r / kv_lora, j = r % kv_lora;
            for (int64_t i = 0; i < nope; ++i)
                kv_b->read_f32(uint64_t((head * (nope + v_dim) + i) * kv_lora + j), 1, dst + i);
        };
        p.plan().tensors.push_back(std::move(kb));
        ConvertTensor vb;
        vb.name = b + "attn_v_b.weight";
        vb.n_dims = 3;
        vb.ne[0] = kv_lora, vb.ne[1] = v_dim, vb.ne[2] = n_head_kv_cfg;
        vb.row = [kv_b, nope, v_dim, kv_lora](int64_t r, float* dst) {
            const int64_t head = r / v_dim, i = r % v_dim;
            kv_b->read_f32(uint64_t(head * (nope + v_dim) + nope + i) * uint64_t(kv_lora), uint64_t(kv_lora), dst);
        };
        p.plan().tensors.push_back(std::move(vb));
        p.add(b + "attn_output.weight", p.need(h + "self_attn.o_proj.weight", {d.n_embd, d.n_head * v_dim}));
        p.add(b + "ffn_norm.weight", p.need(h + "post_attention_layernorm.weight", {d.n_embd}));
        if (!moe || il < first_dense) {
            p.add(b + "ffn_gate.weight", p.need(h + "mlp.gate_proj.weight", {d.n_ff, d.n_embd}));
            p.add(b + "ffn_up.weight", p.need(h + "mlp.up_proj.weight", {d.n_ff, d.n_embd}));
            p.add(b + "ffn_down.weight", p.need(h + "mlp.down_proj.weight", {d.n_embd, d.n_ff}));
            continue;
        }
        p.add(b + "ffn_gate_inp.weight", p.need(h + "mlp.gate.weight", {n_expert, d.n_embd}), true);  // the router stays f32
        if (auto* t = p.maybe(h + "mlp.gate.e_score_correction_bias", {n_expert})) p.add(b + "exp_probs_b.bias", *t);
        add_experts(p, b + "ffn_down_exps.weight", h, "down_proj", n_expert, d.n_embd, moe_ff);
        add_experts(p, b + "ffn_gate_exps.weight", h, "gate_proj", n_expert, moe_ff, d.n_embd);
        add_experts(p, b + "ffn_up_exps.weight", h, "up_proj", n_expert, moe_ff, d.n_embd);
        if (n_shared > 0) {
            const int64_t sh = moe_ff * n_shared;
            p.add(b + "ffn_gate_shexp.weight", p.need(h + "mlp.shared_experts.gate_proj.weight", {sh, d.n_embd}));
            p.add(b + "ffn_down_shexp.weight", p.need(h + "mlp.shared_experts.down_proj.weight", {d.n_embd, sh}));
            p.add(b + "ffn_up_shexp.weight", p.need(h + "mlp.shared_experts.up_proj.weight", {sh, d.n_embd}));
        }
    }
    add_output(p, c, d, false, 0.0f);
    // Multi-token-prediction layers past num_hidden_layers are skipped, as llama.cpp does.
    const int64_t n_layer = d.n_layer;
    p.finish([n_layer](const std::string& name) {
        if (name.compare(0, 13, "model.layers.") != 0) return false;
        return std::atoll(name.c_str() + 13) >= n_layer;
    });
}

struct ArchEntry {
    const char* hf;
    const char* arch;
};

const ArchEntry kArchs[] = {
    {"LlamaForCausalLM", "llama"},
    {"MistralForCausalLM", "llama"},
    {"Qwen2ForCausalLM", "qwen2"},
    {"Gemma3ForCausalLM", "gemma3"},
    {"DeepseekV2ForCausalLM", "deepseek2"},
};

}  // namespace

std::string convert_supported_architectures() {
    std::string s;
    for (const auto& a : kArchs) s += (s.empty() ? "" : ", ") + std::string(a.hf) + " (" + a.arch + ")";
    return s;
}

ConvertPlan plan_hf_conversion(const std::string& hf_dir) {
    const Config cfg(hf_dir);
    if (!cfg.has("architectures") || !cfg.at("architectures").is_array() || cfg.at("architectures").empty() ||
        !cfg.at("architectures")[0].is_string())
        throw Error(cfg.path() + ": no 'architectures' list (supported: " + convert_supported_architectures() + ")");
    ConvertPlan plan;
    plan.hf_arch = cfg.at("architectures")[0].get<std::string>();
    for (const auto& a : kArchs)
        if (plan.hf_arch == a.hf) plan.arch = a.arch;
    if (plan.arch.empty())
        throw Error(cfg.path() + ": architecture '" + esc(plan.hf_arch) + "' is not supported (supported: " +
                    convert_supported_architectures() + ")");
    plan.checkpoint = std::make_shared<SafetensorsCheckpoint>(SafetensorsCheckpoint::open(hf_dir));

    Planner p(plan, cfg);
    if (plan.hf_arch == "LlamaForCausalLM" || plan.hf_arch == "MistralForCausalLM") {
        plan_llama(p, cfg, plan.hf_arch == "MistralForCausalLM");
    } else if (plan.arch == "qwen2") {
        plan_qwen2(p, cfg);
    } else if (plan.arch == "gemma3") {
        plan_gemma3(p, cfg, hf_dir);
    } else {
        plan_deepseek2(p, cfg);
    }
    return plan;
}

}  // namespace mf
