// `minfer convert` without the tokenizer converter: tiny HF checkpoints written here become GGUF files
// whose keys, names and bytes follow llama.cpp, and whose llama/qwen2 logits match an HF-layout reference.
#include <doctest/doctest.h>

#include <cmath>

#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"
#include "models/convert_arch.h"
#include "models/model.h"
#include "models/session.h"
#include "safetensors_fixture.h"
#include "test_util.h"

using namespace mf;
using namespace mf_test;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A checkpoint folder's contents: config.json and f32 tensors (some stored as another dtype).
struct HfModel {
    nlohmann::ordered_json config;
    std::map<std::string, std::vector<float>> values;
    std::map<std::string, std::vector<int64_t>> shapes;
    std::map<std::string, std::string> dtypes;  // F32 unless listed

    void add(const std::string& name, const std::vector<int64_t>& shape, float lo, float hi) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        values[name] = random_floats(size_t(n), lo, hi);
        shapes[name] = shape;
    }
    const std::vector<float>& v(const std::string& name) const { return values.at(name); }
    // Values as the checkpoint stores them (rounded through its dtype).
    std::vector<float> stored(const std::string& name) const {
        std::vector<float> out = values.at(name);
        const auto it = dtypes.find(name);
        if (it != dtypes.end())
            for (float& x : out) x = it->second == "F16" ? fp16_to_fp32(fp32_to_fp16(x)) : bf16_to_fp32(fp32_to_bf16(x));
        return out;
    }
    // Writes config.json and the tensors (into n_shards files with an index when n_shards > 1).
    void write(const std::string& dir, int n_shards = 1) const {
        write_text(dir + "/config.json", config.dump(2));
        std::vector<std::vector<StTensor>> shards(static_cast<size_t>(n_shards));
        nlohmann::ordered_json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::ordered_json::object()}};
        size_t i = 0;
        for (const auto& [name, vals] : values) {
            const auto it = dtypes.find(name);
            const size_t s = i++ % size_t(n_shards);
            shards[s].push_back(st_tensor(name, shapes.at(name), vals, it == dtypes.end() ? "F32" : it->second));
            index["weight_map"][name] = strfmt("model-%05zu-of-%05d.safetensors", s + 1, n_shards);
        }
        if (n_shards == 1) return write_safetensors(dir + "/model.safetensors", shards[0]);
        for (size_t s = 0; s < shards.size(); ++s)
            write_safetensors(dir + "/" + strfmt("model-%05zu-of-%05d.safetensors", s + 1, n_shards), shards[s]);
        write_text(dir + "/model.safetensors.index.json", index.dump());
    }
};

constexpr int64_t E = 64, L = 2, H = 4, D = 16, FF = 96, V = 40;

// A tiny Llama (or Qwen2, with Q/K/V biases) in HF's layout.
HfModel tiny_llama(const std::string& hf_arch, int64_t n_head_kv, bool tied) {
    HfModel m;
    m.config = {{"architectures", {hf_arch}}, {"hidden_size", E}, {"num_hidden_layers", L}, {"num_attention_heads", H},
                {"num_key_value_heads", n_head_kv}, {"intermediate_size", FF}, {"vocab_size", V},
                {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
                {"tie_word_embeddings", tied}};
    m.add("model.embed_tokens.weight", {V, E}, -1, 1);
    m.add("model.norm.weight", {E}, 0.9f, 1.1f);
    if (!tied) m.add("lm_head.weight", {V, E}, -0.3f, 0.3f);
    for (int64_t il = 0; il < L; ++il) {
        const std::string p = "model.layers." + std::to_string(il) + ".";
        m.add(p + "input_layernorm.weight", {E}, 0.9f, 1.1f);
        m.add(p + "self_attn.q_proj.weight", {H * D, E}, -0.3f, 0.3f);
        m.add(p + "self_attn.k_proj.weight", {n_head_kv * D, E}, -0.3f, 0.3f);
        m.add(p + "self_attn.v_proj.weight", {n_head_kv * D, E}, -0.3f, 0.3f);
        if (hf_arch == "Qwen2ForCausalLM") {
            m.add(p + "self_attn.q_proj.bias", {H * D}, -0.3f, 0.3f);
            m.add(p + "self_attn.k_proj.bias", {n_head_kv * D}, -0.3f, 0.3f);
            m.add(p + "self_attn.v_proj.bias", {n_head_kv * D}, -0.3f, 0.3f);
        }
        m.add(p + "self_attn.o_proj.weight", {E, H * D}, -0.2f, 0.2f);
        m.add(p + "post_attention_layernorm.weight", {E}, 0.9f, 1.1f);
        m.add(p + "mlp.gate_proj.weight", {FF, E}, -0.2f, 0.2f);
        m.add(p + "mlp.up_proj.weight", {FF, E}, -0.2f, 0.2f);
        m.add(p + "mlp.down_proj.weight", {E, FF}, -0.2f, 0.2f);
    }
    return m;
}

// A stand-in for convert_hf_tokenizer: an SPM vocabulary of V pieces that minfer loads.
void test_tokenizer(GGUFWriter& w) {
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    std::vector<int32_t> types = {2, 3, 3};
    for (int64_t i = 3; i < V; ++i) {
        tokens.push_back(std::string(1, char('a' + (i - 3) % 26)) + (i >= 29 ? "x" : ""));
        scores.push_back(-float(i));
        types.push_back(1);
    }
    w.set_str("tokenizer.ggml.model", "llama");
    w.set_array_str("tokenizer.ggml.tokens", tokens);
    w.set("tokenizer.ggml.scores", GGUFMetaValue::array_f32(scores));
    w.set("tokenizer.ggml.token_type", GGUFMetaValue::array_i32(types));
    w.set_u32("tokenizer.ggml.bos_token_id", 1);
    w.set_u32("tokenizer.ggml.eos_token_id", 2);
}

std::string convert(const std::string& dir, DType type = DType::F32, const TokenizerFn& tok = test_tokenizer) {
    ConvertOptions o;
    o.hf_dir = dir;
    o.out_path = dir + "/out.gguf";
    o.type = type;
    convert_hf_checkpoint_with(o, tok);
    return o.out_path;
}

// Row r of a converted f32 tensor.
std::vector<float> gguf_row(const GGUFFile& f, const std::string& name, int64_t r) {
    const GGUFTensorInfo* t = f.find_tensor(name);
    REQUIRE_MESSAGE(t, name);
    REQUIRE(t->type == DType::F32);
    const float* p = static_cast<const float*>(t->data) + r * t->ne[0];
    return std::vector<float>(p, p + t->ne[0]);
}

std::vector<float> hf_row(const HfModel& m, const std::string& name, int64_t r) {
    const auto& v = m.v(name);
    const int64_t n = m.shapes.at(name).back();
    return std::vector<float>(v.begin() + r * n, v.begin() + (r + 1) * n);
}

// HF's forward pass in double over the HF tensors: rotate-half RoPE (element i pairs with
// i + head_dim/2), GQA, SwiGLU; K and V rounded to f16 as minfer's cache stores them.
std::vector<std::vector<double>> hf_reference(const HfModel& m, const std::vector<int32_t>& tokens) {
    const int64_t n_kv = m.config["num_key_value_heads"].get<int64_t>();
    const bool tied = m.config["tie_word_embeddings"].get<bool>();
    const auto linear = [&](const std::string& name, const std::vector<double>& x) {
        const auto& w = m.v(name + ".weight");
        const size_t n_out = w.size() / x.size();
        const auto b = m.values.find(name + ".bias");
        std::vector<double> y(n_out);
        for (size_t o = 0; o < n_out; ++o) {
            double s = b != m.values.end() ? b->second[o] : 0.0;
            for (size_t i = 0; i < x.size(); ++i) s += double(w[o * x.size() + i]) * x[i];
            y[o] = s;
        }
        return y;
    };
    const auto norm = [&](const std::vector<double>& x, const std::string& name) {
        double ss = 0;
        for (double v : x) ss += v * v;
        const double r = 1.0 / std::sqrt(ss / double(x.size()) + 1e-5);
        std::vector<double> y(x.size());
        for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * m.v(name)[i];
        return y;
    };
    const auto rope = [&](double* v, int pos) {
        for (int64_t i = 0; i < D / 2; ++i) {
            const double th = pos * std::pow(10000.0, -2.0 * double(i) / double(D));
            const double x0 = v[i], x1 = v[i + D / 2];
            v[i] = x0 * std::cos(th) - x1 * std::sin(th);
            v[i + D / 2] = x0 * std::sin(th) + x1 * std::cos(th);
        }
    };
    std::vector<std::vector<std::vector<double>>> kc(L), vc(L);
    std::vector<std::vector<double>> out;
    for (size_t pos = 0; pos < tokens.size(); ++pos) {
        std::vector<double> x(m.v("model.embed_tokens.weight").begin() + tokens[pos] * E,
                              m.v("model.embed_tokens.weight").begin() + (tokens[pos] + 1) * E);
        for (int64_t il = 0; il < L; ++il) {
            const std::string p = "model.layers." + std::to_string(il) + ".";
            const auto h = norm(x, p + "input_layernorm.weight");
            auto q = linear(p + "self_attn.q_proj", h), k = linear(p + "self_attn.k_proj", h), v = linear(p + "self_attn.v_proj", h);
            for (int64_t hd = 0; hd < H; ++hd) rope(&q[size_t(hd * D)], int(pos));
            for (int64_t hd = 0; hd < n_kv; ++hd) rope(&k[size_t(hd * D)], int(pos));
            for (double& e : k) e = fp16_to_fp32(fp32_to_fp16(float(e)));
            for (double& e : v) e = fp16_to_fp32(fp32_to_fp16(float(e)));
            kc[size_t(il)].push_back(k);
            vc[size_t(il)].push_back(v);
            std::vector<double> att(size_t(H * D), 0.0);
            for (int64_t hd = 0; hd < H; ++hd) {
                const int64_t g = hd / (H / n_kv);
                std::vector<double> s(pos + 1);
                double mx = -1e300, z = 0;
                for (size_t t = 0; t <= pos; ++t) {
                    double d = 0;
                    for (int64_t i = 0; i < D; ++i) d += q[size_t(hd * D + i)] * kc[size_t(il)][t][size_t(g * D + i)];
                    mx = std::max(mx, s[t] = d / std::sqrt(double(D)));
                }
                for (double& e : s) z += (e = std::exp(e - mx));
                for (size_t t = 0; t <= pos; ++t)
                    for (int64_t i = 0; i < D; ++i) att[size_t(hd * D + i)] += s[t] / z * vc[size_t(il)][t][size_t(g * D + i)];
            }
            const auto o = linear(p + "self_attn.o_proj", att);
            for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
            const auto h2 = norm(x, p + "post_attention_layernorm.weight");
            auto gt = linear(p + "mlp.gate_proj", h2);
            const auto up = linear(p + "mlp.up_proj", h2);
            for (size_t i = 0; i < gt.size(); ++i) gt[i] = gt[i] / (1.0 + std::exp(-gt[i])) * up[i];
            const auto dn = linear(p + "mlp.down_proj", gt);
            for (size_t i = 0; i < x.size(); ++i) x[i] += dn[i];
        }
        out.push_back(linear(tied ? "model.embed_tokens" : "lm_head", norm(x, "model.norm.weight")));
    }
    return out;
}


std::vector<int32_t> some_tokens(size_t n) {
    std::vector<int32_t> t;
    for (float x : random_floats(n, 3.0f, float(V) - 0.01f)) t.push_back(int32_t(x));
    return t;
}

}  // namespace

TEST_CASE("converted llama and qwen2 (MHA, GQA, MQA, tied or not) run in minfer like the HF model") {
    for (const std::string arch : {"LlamaForCausalLM", "Qwen2ForCausalLM"}) {
        for (int64_t n_kv : {4, 2, 1}) {
            CAPTURE(arch);
            CAPTURE(n_kv);
            const bool tied = n_kv == 2;
            const std::string dir = temp_dir("llama");
            const HfModel m = tiny_llama(arch, n_kv, tied);
            m.write(dir);
            const std::string out = convert(dir);
            CHECK_FALSE(file_exists(out + ".tmp"));
            {
                const GGUFFile f = GGUFFile::open(out);
                const std::string a = arch == "LlamaForCausalLM" ? "llama" : "qwen2";
                CHECK(f.get_str("general.architecture") == a);
                CHECK(f.get_u32(a + ".block_count") == L);
                CHECK(f.get_u32(a + ".attention.head_count_kv") == n_kv);
                CHECK(f.get_u32("general.file_type") == 0);
                CHECK(f.get_u32("general.quantization_version") == 2);
                CHECK((f.find_tensor("output.weight") == nullptr) == tied);
                if (a == "llama") {
                    CHECK(f.get_u32("llama.vocab_size") == V);
                    CHECK(f.get_u32("llama.rope.dimension_count") == D);
                    // Q/K rows permuted for ggml's pairwise RoPE: row 2i + t of a head is HF row t * D/2 + i.
                    for (int64_t r : {int64_t(0), int64_t(1), int64_t(2), int64_t(3), int64_t(9), n_kv * D - 1}) {
                        const int64_t src = r / D * D + (r % 2) * (D / 2) + (r % D) / 2;
                        CHECK(gguf_row(f, "blk.1.attn_k.weight", r) == hf_row(m, "model.layers.1.self_attn.k_proj.weight", src));
                    }
                    CHECK(gguf_row(f, "blk.0.attn_v.weight", 5) == hf_row(m, "model.layers.0.self_attn.v_proj.weight", 5));
                } else {
                    CHECK_FALSE(f.has("qwen2.vocab_size"));  // as llama.cpp: the token list sizes it
                    CHECK(gguf_row(f, "blk.0.attn_k.weight", 3) == hf_row(m, "model.layers.0.self_attn.k_proj.weight", 3));
                    CHECK(gguf_row(f, "blk.1.attn_q.bias", 0) == m.v("model.layers.1.self_attn.q_proj.bias"));
                }
            }
            auto backend = make_cpu_backend(2);
            auto model = load_model(out, *backend);
            const std::vector<int32_t> tokens = some_tokens(7);
            const auto expect = hf_reference(m, tokens);
            Session s(*model, SessionParams{64, 256});
            for (size_t i = 0; i < tokens.size(); ++i) {
                const auto& logits = i == 0 ? s.prefill({tokens[0]}) : s.decode(tokens[i]);
                // f32 arithmetic against double, plus one-f16-step differences in the cache (see test_model)
                CHECK(max_rel_diff(logits, expect[i]) < 1e-3);
            }
            remove_dir(dir);
        }
    }
}

TEST_CASE("--type: matrices quantized, norms f32, rows the blocks cannot hold in f16; file_type as llama.cpp") {
    const std::string dir = temp_dir("types");
    const HfModel m = tiny_llama("LlamaForCausalLM", 2, false);
    m.write(dir);
    std::string out = convert(dir, DType::Q8_0);
    {
        const GGUFFile f = GGUFFile::open(out);
        CHECK(f.get_u32("general.file_type") == 7);
        CHECK(f.find_tensor("blk.0.attn_q.weight")->type == DType::Q8_0);
        CHECK(f.find_tensor("token_embd.weight")->type == DType::Q8_0);
        CHECK(f.find_tensor("blk.0.ffn_norm.weight")->type == DType::F32);
    }
    auto backend = make_cpu_backend(2);
    const std::vector<int32_t> tokens = some_tokens(5);
    const auto expect = hf_reference(m, tokens);
    {
        auto model = load_model(out, *backend);
        Session s(*model, SessionParams{64, 256});
        // 8-bit weights and 8-bit activations: over 300 seeds the largest logit difference relative to
        // the largest logit was 1.9% at the median, 4.3% at the 99th percentile and 5.5% at most (0.05
        // failed ~1 seed in 150); a wrong block layout or scale is off by tens of percent.
        CHECK(max_rel_diff(s.prefill(tokens), expect.back()) < 0.08);
    }
    out = convert(dir, DType::Q4_K);  // n_embd 64 < 256: every matrix falls back to f16
    {
        const GGUFFile f = GGUFFile::open(out);
        CHECK(f.get_u32("general.file_type") == 14);
        CHECK(f.find_tensor("blk.1.ffn_down.weight")->type == DType::F16);
        CHECK(f.find_tensor("output_norm.weight")->type == DType::F32);
    }
    out = convert(dir, DType::BF16);
    CHECK(GGUFFile::open(out).find_tensor("lm_head.weight") == nullptr);
    CHECK(GGUFFile::open(out).find_tensor("output.weight")->type == DType::BF16);
    CHECK(contains(error_of([&] { convert(dir, DType::Q5_1); }), "output type q5_1 is not supported"));
    remove_dir(dir);
}

TEST_CASE("sharded and bf16/f16 checkpoints convert to the same tensors") {
    const std::string a = temp_dir("one"), b = temp_dir("sharded");
    HfModel m = tiny_llama("MistralForCausalLM", 2, true);
    m.config["sliding_window"] = 4096;
    m.dtypes["model.layers.0.self_attn.q_proj.weight"] = "BF16";
    m.dtypes["model.layers.1.mlp.up_proj.weight"] = "F16";
    m.write(a);
    m.write(b, 3);
    const GGUFFile fa = GGUFFile::open(convert(a)), fb = GGUFFile::open(convert(b));
    CHECK(fa.get_u32("llama.attention.sliding_window") == 4096);
    REQUIRE(fa.n_tensors() == fb.n_tensors());
    for (size_t i = 0; i < fa.n_tensors(); ++i) {
        CHECK(fa.tensor(i).name == fb.tensor(i).name);
        CHECK(std::memcmp(fa.tensor(i).data, fb.tensor(i).data, fa.tensor(i).n_bytes) == 0);
    }
    const auto up = m.stored("model.layers.1.mlp.up_proj.weight");
    CHECK(gguf_row(fa, "blk.1.ffn_up.weight", 3) == std::vector<float>(up.begin() + 3 * E, up.begin() + 4 * E));
    remove_dir(a);
    remove_dir(b);
}

TEST_CASE("Llama 3 rope scaling becomes rope_freqs.weight") {
    const std::string dir = temp_dir("llama3");
    HfModel m = tiny_llama("LlamaForCausalLM", 2, false);
    m.config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
    m.write(dir);
    const GGUFFile f = GGUFFile::open(convert(dir));
    const auto factors = gguf_row(f, "rope_freqs.weight", 0);
    REQUIRE(factors.size() == size_t(D / 2));
    CHECK(factors.front() == 1.0f);  // the highest frequency is kept
    CHECK(factors.back() == 8.0f);   // the lowest is divided by the factor
    CHECK_FALSE(f.has("llama.rope.scaling.type"));
    remove_dir(dir);
}

TEST_CASE("Gemma 3: norms shifted by one, four norms per layer, QK norms, sliding window keys") {
    const std::string dir = temp_dir("gemma3");
    HfModel m;
    m.config = {{"architectures", {"Gemma3ForCausalLM"}}, {"hidden_size", 32}, {"num_hidden_layers", 2},
                {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"head_dim", 16}, {"intermediate_size", 48},
                {"vocab_size", V}, {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0},
                {"rope_local_base_freq", 10000.0}, {"sliding_window", 128}, {"final_logit_softcapping", nullptr},
                {"attn_logit_softcapping", nullptr}, {"rope_scaling", {{"rope_type", "linear"}, {"factor", 8.0}}}};
    m.add("model.embed_tokens.weight", {V, 32}, -1, 1);
    m.add("model.norm.weight", {32}, -0.1f, 0.1f);
    for (int il = 0; il < 2; ++il) {
        const std::string p = "model.layers." + std::to_string(il) + ".";
        for (const char* n : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"})
            m.add(p + n + ".weight", {32}, -0.1f, 0.1f);
        m.add(p + "self_attn.q_norm.weight", {16}, -0.1f, 0.1f);
        m.add(p + "self_attn.k_norm.weight", {16}, -0.1f, 0.1f);
        m.add(p + "self_attn.q_proj.weight", {32, 32}, -0.3f, 0.3f);
        m.add(p + "self_attn.k_proj.weight", {16, 32}, -0.3f, 0.3f);
        m.add(p + "self_attn.v_proj.weight", {16, 32}, -0.3f, 0.3f);
        m.add(p + "self_attn.o_proj.weight", {32, 32}, -0.3f, 0.3f);
        m.add(p + "mlp.gate_proj.weight", {48, 32}, -0.3f, 0.3f);
        m.add(p + "mlp.up_proj.weight", {48, 32}, -0.3f, 0.3f);
        m.add(p + "mlp.down_proj.weight", {32, 48}, -0.3f, 0.3f);
    }
    m.dtypes["model.layers.1.self_attn.k_norm.weight"] = "F16";
    m.write(dir);
    const GGUFFile f = GGUFFile::open(convert(dir, DType::F16));
    CHECK(f.get_str("general.architecture") == "gemma3");
    CHECK(f.get_u32("gemma3.attention.sliding_window") == 128);
    CHECK(f.get_f32("gemma3.rope.freq_base") == 1000000.0f);
    CHECK(f.get_f32("gemma3.rope.freq_base_swa") == 10000.0f);
    CHECK(f.get_u32("gemma3.attention.key_length") == 16);
    CHECK(f.get_str("gemma3.rope.scaling.type") == "linear");
    CHECK(f.get_f32("gemma3.rope.scaling.factor") == 8.0f);
    CHECK_FALSE(f.has("gemma3.final_logit_softcapping"));
    CHECK(f.find_tensor("output.weight") == nullptr);  // tied by default
    const auto n = gguf_row(f, "blk.1.post_ffw_norm.weight", 0);
    for (size_t i = 0; i < n.size(); ++i) CHECK(n[i] == m.v("model.layers.1.post_feedforward_layernorm.weight")[i] + 1.0f);
    const auto k = gguf_row(f, "blk.1.attn_k_norm.weight", 0);  // an F16 norm is shifted in F16
    for (size_t i = 0; i < k.size(); ++i)
        CHECK(k[i] == fp16_to_fp32(fp32_to_fp16(m.stored("model.layers.1.self_attn.k_norm.weight")[i] + 1.0f)));
    CHECK(gguf_row(f, "output_norm.weight", 0)[3] == m.v("model.norm.weight")[3] + 1.0f);
    for (const char* t : {"attn_norm", "post_attention_norm", "ffn_norm", "attn_q_norm"})
        CHECK_MESSAGE(f.find_tensor(std::string("blk.0.") + t + ".weight"), t);
    CHECK(f.find_tensor("blk.0.attn_q.weight")->type == DType::F16);
    remove_dir(dir);
}

TEST_CASE("DeepSeek-V2: MLA kv_b split into k_b (transposed) and v_b, experts stacked, MoE keys") {
    const std::string dir = temp_dir("deepseek2");
    const int64_t e = 32, nh = 2, rank = 16, rope = 8, nope = 16, vd = 16, nx = 4, mff = 32, ff = 48;
    HfModel m;
    m.config = {{"architectures", {"DeepseekV2ForCausalLM"}}, {"hidden_size", e}, {"num_hidden_layers", 2},
                {"num_attention_heads", nh}, {"num_key_value_heads", nh}, {"intermediate_size", ff},
                {"moe_intermediate_size", mff}, {"vocab_size", V}, {"q_lora_rank", nullptr}, {"kv_lora_rank", rank},
                {"qk_rope_head_dim", rope}, {"qk_nope_head_dim", nope}, {"v_head_dim", vd}, {"n_routed_experts", nx},
                {"n_shared_experts", 1}, {"num_experts_per_tok", 2}, {"first_k_dense_replace", 1},
                {"norm_topk_prob", false}, {"routed_scaling_factor", 1.0}, {"scoring_func", "softmax"},
                {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
                {"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64},
                                  {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 0.707}, {"mscale_all_dim", 0.707}}}};
    m.add("model.embed_tokens.weight", {V, e}, -1, 1);
    m.add("model.norm.weight", {e}, 0.9f, 1.1f);
    m.add("lm_head.weight", {V, e}, -1, 1);
    for (int il = 0; il < 2; ++il) {
        const std::string p = "model.layers." + std::to_string(il) + ".";
        m.add(p + "input_layernorm.weight", {e}, 0.9f, 1.1f);
        m.add(p + "post_attention_layernorm.weight", {e}, 0.9f, 1.1f);
        m.add(p + "self_attn.q_proj.weight", {nh * (nope + rope), e}, -1, 1);
        m.add(p + "self_attn.kv_a_proj_with_mqa.weight", {rank + rope, e}, -1, 1);
        m.add(p + "self_attn.kv_a_layernorm.weight", {rank}, 0.9f, 1.1f);
        m.add(p + "self_attn.kv_b_proj.weight", {nh * (nope + vd), rank}, -1, 1);
        m.add(p + "self_attn.o_proj.weight", {e, nh * vd}, -1, 1);
        if (il == 0) {
            m.add(p + "mlp.gate_proj.weight", {ff, e}, -1, 1);
            m.add(p + "mlp.up_proj.weight", {ff, e}, -1, 1);
            m.add(p + "mlp.down_proj.weight", {e, ff}, -1, 1);
            continue;
        }
        m.add(p + "mlp.gate.weight", {nx, e}, -1, 1);
        for (int x = 0; x < nx; ++x) {
            const std::string q = p + "mlp.experts." + std::to_string(x) + ".";
            m.add(q + "gate_proj.weight", {mff, e}, -1, 1);
            m.add(q + "up_proj.weight", {mff, e}, -1, 1);
            m.add(q + "down_proj.weight", {e, mff}, -1, 1);
        }
        m.add(p + "mlp.shared_experts.gate_proj.weight", {mff, e}, -1, 1);
        m.add(p + "mlp.shared_experts.up_proj.weight", {mff, e}, -1, 1);
        m.add(p + "mlp.shared_experts.down_proj.weight", {e, mff}, -1, 1);
    }
    m.add("model.layers.2.self_attn.kv_a_layernorm.weight", {rank}, 0, 1);  // an MTP layer: skipped
    m.write(dir);
    const GGUFFile f = GGUFFile::open(convert(dir, DType::F32));
    CHECK(f.get_str("general.architecture") == "deepseek2");
    CHECK(f.get_u32("deepseek2.attention.head_count_kv") == 1);
    CHECK(f.get_u32("deepseek2.attention.kv_lora_rank") == rank);
    CHECK_FALSE(f.has("deepseek2.attention.q_lora_rank"));
    CHECK(f.get_u32("deepseek2.attention.key_length") == rank + rope);
    CHECK(f.get_u32("deepseek2.attention.value_length") == rank);
    CHECK(f.get_u32("deepseek2.attention.key_length_mla") == nope + rope);
    CHECK(f.get_u32("deepseek2.attention.value_length_mla") == vd);
    CHECK(f.get_u32("deepseek2.rope.dimension_count") == rope);
    CHECK(f.get_u32("deepseek2.leading_dense_block_count") == 1);
    CHECK(f.get_u32("deepseek2.expert_count") == nx);
    CHECK(f.get_u32("deepseek2.expert_shared_count") == 1);
    CHECK(f.get_u32("deepseek2.expert_used_count") == 2);
    CHECK(f.get_u32("deepseek2.expert_feed_forward_length") == mff);
    CHECK(f.get_u32("deepseek2.expert_gating_func") == 1);
    CHECK(f.get_str("deepseek2.rope.scaling.type") == "yarn");
    CHECK(f.get_u32("deepseek2.rope.scaling.original_context_length") == 64);
    CHECK(std::fabs(f.get_f32("deepseek2.rope.scaling.yarn_log_multiplier") - 0.0707f) < 1e-6f);
    CHECK(f.get_str("general.size_label").find("4x") == 0);

    const auto& kvb = m.v("model.layers.1.self_attn.kv_b_proj.weight");  // [nh * (nope + vd), rank]
    const GGUFTensorInfo* kb = f.find_tensor("blk.1.attn_k_b.weight");
    REQUIRE(kb);
    CHECK((kb->ne[0] == nope && kb->ne[1] == rank && kb->ne[2] == nh));
    const GGUFTensorInfo* vb = f.find_tensor("blk.1.attn_v_b.weight");
    REQUIRE(vb);
    CHECK((vb->ne[0] == rank && vb->ne[1] == vd && vb->ne[2] == nh));
    const float* kbd = static_cast<const float*>(kb->data);
    const float* vbd = static_cast<const float*>(vb->data);
    for (int64_t h = 0; h < nh; ++h)
        for (int64_t j = 0; j < rank; j += 5)
            for (int64_t i = 0; i < nope; i += 3) CHECK(kbd[(h * rank + j) * nope + i] == kvb[size_t((h * (nope + vd) + i) * rank + j)]);
    for (int64_t h = 0; h < nh; ++h)
        for (int64_t i = 0; i < vd; i += 3)
            for (int64_t j = 0; j < rank; j += 5) CHECK(vbd[(h * vd + i) * rank + j] == kvb[size_t((h * (nope + vd) + nope + i) * rank + j)]);

    const GGUFTensorInfo* down = f.find_tensor("blk.1.ffn_down_exps.weight");
    REQUIRE(down);
    CHECK((down->ne[0] == mff && down->ne[1] == e && down->ne[2] == nx));
    CHECK(gguf_row(f, "blk.1.ffn_gate_exps.weight", 2 * mff + 7) == hf_row(m, "model.layers.1.mlp.experts.2.gate_proj.weight", 7));
    CHECK(gguf_row(f, "blk.1.ffn_down_exps.weight", 3 * e + 1) == hf_row(m, "model.layers.1.mlp.experts.3.down_proj.weight", 1));
    CHECK(f.find_tensor("blk.1.ffn_up_shexp.weight"));
    CHECK(f.find_tensor("blk.0.ffn_gate.weight"));
    CHECK(f.find_tensor("blk.0.ffn_gate_exps.weight") == nullptr);
    CHECK(f.find_tensor("blk.2.attn_kv_a_norm.weight") == nullptr);

    // With --type q8_0 the router stays f32, as llama.cpp keeps it.
    const GGUFFile q = GGUFFile::open(convert(dir, DType::Q8_0));
    CHECK(q.find_tensor("blk.1.ffn_gate_inp.weight")->type == DType::F32);
    CHECK(q.find_tensor("blk.1.ffn_up_exps.weight")->type == DType::Q8_0);
    CHECK(q.find_tensor("blk.1.attn_k_b.weight")->type == DType::F16);  // rows of 16: not a q8_0 block
    remove_dir(dir);
}

TEST_CASE("bad checkpoints are one clear error and leave neither OUT nor OUT.tmp") {
    const std::string dir = temp_dir("bad");
    const auto attempt = [&](const TokenizerFn& tok = test_tokenizer) {
        const std::string e = error_of([&] { convert(dir, DType::F16, tok); });
        CHECK_FALSE(file_exists(dir + "/out.gguf"));
        CHECK_FALSE(file_exists(dir + "/out.gguf.tmp"));
        CHECK(e.find('\n') == std::string::npos);
        return e;
    };
    CHECK(contains(attempt(), "config.json: missing"));
    HfModel m = tiny_llama("LlamaForCausalLM", 2, false);
    m.config["architectures"] = {"GPT2LMHeadModel"};
    m.write(dir);
    std::string e = attempt();
    CHECK(contains(e, "architecture 'GPT2LMHeadModel' is not supported"));
    CHECK(contains(e, "Qwen2ForCausalLM (qwen2)"));

    m = tiny_llama("LlamaForCausalLM", 2, false);
    m.shapes["model.layers.1.self_attn.k_proj.weight"] = {H * D, E};
    m.values["model.layers.1.self_attn.k_proj.weight"] = random_floats(size_t(H * D * E));
    m.write(dir);
    e = attempt();
    CHECK(contains(e, "tensor 'model.layers.1.self_attn.k_proj.weight' has shape [64, 64], but"));
    CHECK(contains(e, "implies [32, 64]"));

    m = tiny_llama("LlamaForCausalLM", 2, false);
    m.values.erase("model.layers.0.mlp.up_proj.weight");
    m.write(dir);
    CHECK(contains(attempt(), "lacks tensor 'model.layers.0.mlp.up_proj.weight'"));

    m = tiny_llama("LlamaForCausalLM", 2, false);
    m.add("model.layers.0.mlp.mystery.weight", {2}, 0, 1);
    m.write(dir);
    CHECK(contains(attempt(), "tensor 'model.layers.0.mlp.mystery.weight' is not part of a LlamaForCausalLM checkpoint"));

    m = tiny_llama("LlamaForCausalLM", 2, false);
    m.write(dir);
    StTensor ids{"model.norm.weight", "I32", {E}, std::vector<uint8_t>(size_t(E) * 4, 0)};
    std::vector<StTensor> ts;
    for (const auto& [name, vals] : m.values)
        ts.push_back(name == "model.norm.weight" ? ids : st_tensor(name, m.shapes.at(name), vals));
    write_safetensors(dir + "/model.safetensors", ts);
    CHECK(contains(attempt(), "tensor 'model.norm.weight' has dtype I32"));

    m.write(dir);
    std::remove((dir + "/model.safetensors").c_str());
    CHECK(contains(attempt(), "no model.safetensors"));

    m.write(dir);
    REQUIRE(truncate((dir + "/model.safetensors").c_str(), 4000) == 0);
    CHECK(contains(attempt(), "the file is truncated"));

    m.write(dir);
    CHECK(contains(attempt([](GGUFWriter&) { throw Error("tokenizer.json: no model"); }), "tokenizer.json: no model"));
    remove_dir(dir);
}

TEST_CASE("progress reports every tensor, and minfer.kv.* keys are recorded when asked for") {
    const std::string dir = temp_dir("progress");
    tiny_llama("LlamaForCausalLM", 2, false).write(dir);
    ConvertOptions o;
    o.hf_dir = dir;
    o.out_path = dir + "/out.gguf";
    o.kv_type = "q8_0";
    o.kv_window = 512;
    o.kv_sinks = 4;
    size_t calls = 0, last_n = 0;
    uint64_t last_bytes = 0;
    o.progress = [&](size_t i, size_t n, uint64_t bytes) {
        CHECK(i == ++calls);
        CHECK(bytes > last_bytes);
        last_n = n, last_bytes = bytes;
    };
    convert_hf_checkpoint_with(o, test_tokenizer);
    const GGUFFile f = GGUFFile::open(o.out_path);
    CHECK(calls == f.n_tensors());
    CHECK(last_n == f.n_tensors());
    CHECK(f.get_str("minfer.kv.type_k") == "q8_0");
    CHECK(f.get_str("minfer.kv.type_v") == "q8_0");
    CHECK(f.get_u32("minfer.kv.window") == 512);
    CHECK(f.get_u32("minfer.kv.sinks") == 4);
    o.kv_type = "q3_k";
    CHECK(contains(error_of([&] { convert_hf_checkpoint_with(o, test_tokenizer); }), "unknown KV cache type 'q3_k'"));
    remove_dir(dir);
}
