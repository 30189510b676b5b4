// minfer convert against Hugging Face transformers: the tiny random checkpoints of tests/fixtures/hf
// (tools/fixtures/make_model_fixtures.py) converted, run on the CPU and compared with transformers'
// float32 logits and greedy tokens (Gemma 3 included: its window of 8 is shorter than the 28 positions
// run); Gemma 3 and DeepSeek-V2 files also checked key by key and tensor by tensor against what
// llama.cpp's convert_hf_to_gguf.py writes (DeepSeek-V2's logits: tests/test_deepseek2.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"
#include "model_fixture.h"
#include "models/convert.h"
#include "models/model.h"
#include "models/session.h"
#include "models/tokenizer.h"
#include "session_fixture.h"
#include "test_util.h"

using namespace mf;
using mf_test::max_rel_diff;
using mf_test::random_tokens;
using mf_test::argmax;
using mf_test::decode_each;
using mf_test::greedy_after;
using mf_test::prefill_each;
using mf_test::session64;
using json = nlohmann::json;

namespace {

std::string fixture_dir(const std::string& name) { return mf_test::source_path("tests/fixtures/hf/" + name); }

json read_json(const std::string& path) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "missing fixture file ", path);
    return json::parse(in);
}

// transformers' outputs for one fixture (expected.json).
struct Expected {
    std::string text;
    std::vector<int32_t> ids;                 // the sequence fed, <|begin_of_text|> first
    std::vector<std::vector<double>> logits;  // [position][n_vocab], 6 significant digits
    std::vector<std::vector<double>> logits_kv_f16;  // the same with K and V rounded to f16 in attention
    std::vector<int32_t> greedy;              // 16 tokens after ids, argmax each step
    std::vector<double> margins;              // transformers' top-1 minus top-2 at each greedy step
};

Expected read_expected(const std::string& name) {
    const json j = read_json(fixture_dir(name) + "/expected.json");
    Expected e;
    e.text = j.at("text").get<std::string>();
    e.ids = j.at("ids").get<std::vector<int32_t>>();
    e.logits = j.at("logits").get<std::vector<std::vector<double>>>();
    if (j.contains("logits_kv_f16")) e.logits_kv_f16 = j.at("logits_kv_f16").get<std::vector<std::vector<double>>>();
    e.greedy = j.at("greedy").get<std::vector<int32_t>>();
    e.margins = j.at("greedy_margins").get<std::vector<double>>();
    REQUIRE(e.logits.size() == e.ids.size());
    REQUIRE(e.margins.size() == e.greedy.size());
    return e;
}

// Converts fixture `name` to a temp file of `type`; the caller removes it.
std::string convert(const std::string& name, DType type) {
    ConvertOptions opts;
    opts.hf_dir = fixture_dir(name);
    opts.out_path = mf_test::temp_path(name + "_" + dtype_name(type) + ".gguf");
    opts.type = type;
    convert_hf_checkpoint(opts);
    return opts.out_path;
}


// ||a - b|| / ||b||.
double rms_rel_diff(const std::vector<float>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    return mf_test::rel_error(a.data(), b.data(), a.size());
}


// The fixtures compared here: llama.cpp converts Mistral as "llama" (its window is longer than the
// test); Gemma 3's local layers use their window of 8.
const char* const kRunnable[] = {"llama_mha", "llama_gqa", "llama_mqa", "llama_tied", "mistral", "qwen2", "gemma3"};

}  // namespace

// F32 weights: minfer's f32 matmul keeps f32 activations (core/cpu/ops_matmul.cpp: vec_dot_type F32
// dots the rows in place), so against transformers run with K and V rounded to f16 as they enter
// attention (expected.json's logits_kv_f16: minfer's KV cache is f16) only f32 summation order
// differs, plus the odd cached value whose f32 results straddle an f16 rounding boundary (one f16
// step, 2^-11 relative: measured 2e-6 to 1.7e-4 over the six fixtures). kF32VsKvF16 is 3.5x that.
// Against plain float32 transformers the f16 cache itself counts: transformers alone moves by up to
// 1.7e-3 when its K and V are rounded so (measured), hence kF32VsF32. A wrong permutation, bias,
// rope base or norm epsilon is far larger than either.
constexpr double kF32VsKvF16 = 6e-4;
constexpr double kF32VsF32 = 4e-3;

TEST_CASE("f32 conversions decode every position within tolerance of transformers and greedy tokens exactly") {
    auto backend = make_cpu_backend(2);
    for (const std::string name : kRunnable) {
        CAPTURE(name);
        const Expected e = read_expected(name);
        REQUIRE(!e.logits_kv_f16.empty());
        const std::string path = convert(name, DType::F32);
        auto model = load_model(path, *backend);
        REQUIRE(model->hp.n_vocab == e.logits[0].size());

        const auto logits = decode_each(*model, e.ids);
        double worst = 0, worst_f32 = 0;
        for (size_t i = 0; i < e.ids.size(); ++i) {
            CAPTURE(i);
            const double d = max_rel_diff(logits[i], e.logits_kv_f16[i]);
            const double d32 = max_rel_diff(logits[i], e.logits[i]);
            worst = std::max(worst, d);
            worst_f32 = std::max(worst_f32, d32);
            CHECK(d < kF32VsKvF16);
            CHECK(d32 < kF32VsF32);
        }
        // One prefill of the whole sequence: every position's logits, the batched path.
        const auto batched = prefill_each(*model, e.ids);
        for (size_t i = 0; i < e.ids.size(); ++i) {
            CAPTURE(i);
            CHECK(max_rel_diff(batched[i],
                               e.logits_kv_f16[i]) < kF32VsKvF16);
        }

        // Free-running greedy decoding: transformers' top-1 beats its runner-up by >= 0.05 at every
        // step (the fixture script re-seeds until it does), far above the f32 error, so exact.
        const std::vector<int32_t> greedy = greedy_after(*model, e.ids, e.greedy.size());
        CHECK(greedy == e.greedy);
        MESSAGE(name, " f32: worst max-relative logit error ", worst, " vs transformers with an f16 KV cache, ",
                worst_f32, " vs plain float32");
        std::remove(path.c_str());
    }
}

// F16 weights round each weight by up to 2^-11 and the matmul rounds the activations to f16 too;
// Q8_0 keeps 8 bits per weight and activation (a scale per 32). These random models amplify such
// errors ~15x by the logits (the same factor as the f16 KV cache above: large random weights make
// attention sharp, so small changes in scores move its output), so the bounds are ~3x the worst
// measured over the six fixtures: f16 4.1e-3, q8_0 0.106 (max-relative). A greedy choice is only
// determined where transformers' top-1 beats its runner-up by more than twice the logit error
// (kClear, absolute; the largest logits are ~6): there it must match, teacher-forced.
struct QuantCase {
    DType type;
    double max_rel;  // bound on max_rel_diff at every position
    double clear;    // transformers' top-1 minus top-2 above which minfer must pick the same token
};
constexpr QuantCase kQuantCases[] = {
    {DType::F16, 1.2e-2, 0.1},
    {DType::Q8_0, 0.3, 1.2},
};

TEST_CASE("f16 and q8_0 conversions stay within their bounds of transformers' logits") {
    auto backend = make_cpu_backend(2);
    for (const QuantCase& qc : kQuantCases) {
        for (const std::string name : kRunnable) {
            const std::string type = dtype_name(qc.type);
            CAPTURE(name);
            CAPTURE(type);
            const Expected e = read_expected(name);
            const std::string path = convert(name, qc.type);
            auto model = load_model(path, *backend);
            const auto logits = decode_each(*model, e.ids);
            double worst = 0;
            for (size_t i = 0; i < e.ids.size(); ++i) {
                CAPTURE(i);
                const double d = max_rel_diff(logits[i], e.logits[i]);
                worst = std::max(worst, d);
                CHECK(d < qc.max_rel);
            }
            // Teacher-forced over transformers' greedy tokens.
            Session s(*model, session64());
            const std::vector<float>* l = &s.prefill(e.ids);
            size_t checked = 0;
            for (size_t i = 0; i < e.greedy.size(); ++i) {
                CAPTURE(i);
                if (e.margins[i] >= qc.clear) {
                    CHECK(argmax(*l) == e.greedy[i]);
                    ++checked;
                }
                l = &s.decode(e.greedy[i]);
            }
            MESSAGE(name, " ", type, ": worst max-relative logit error ", worst, "; greedy checked at ",
                    checked, " of ", e.greedy.size(), " steps");
            std::remove(path.c_str());
        }
    }
}

// Q4_0 (4 bits per weight, 8-bit activations) adds ~8% rms error to every matmul's output on these
// random weights (a block's scale is set by its largest of 32 gaussian values); with ~16 quantized
// matrices per token the logits move by 0.21-0.37 rms-relative at position 0 and, through the
// sharp attention, up to 0.89 later (mean over positions 0.39-0.49, measured). So only the relative
// rms error is bounded: per position below 1.2 and on average below 0.7, where logits unrelated to
// transformers' would be ~1.41 at every position.
constexpr double kQ4RmsBound = 1.2;
constexpr double kQ4MeanRmsBound = 0.7;

TEST_CASE("q4_0 conversions keep the logits within a relative rms error bound") {
    auto backend = make_cpu_backend(2);
    for (const std::string name : kRunnable) {
        CAPTURE(name);
        const Expected e = read_expected(name);
        const std::string path = convert(name, DType::Q4_0);
        auto model = load_model(path, *backend);
        const auto logits = decode_each(*model, e.ids);
        double worst = 0, mean = 0;
        for (size_t i = 0; i < e.ids.size(); ++i) {
            CAPTURE(i);
            const double d = rms_rel_diff(logits[i], e.logits[i]);
            worst = std::max(worst, d);
            CHECK(d < kQ4RmsBound);
            mean += d / double(e.ids.size());
        }
        CHECK(mean < kQ4MeanRmsBound);
        MESSAGE(name, " q4_0: rms-relative logit error worst ", worst, ", mean ", mean);
        std::remove(path.c_str());
    }
}

TEST_CASE("the converted tokenizer encodes the fixture sentence as transformers' tokenizer did") {
    auto backend = make_cpu_backend(1);
    for (const std::string name : {"llama_mha", "qwen2"}) {
        CAPTURE(name);
        const Expected e = read_expected(name);
        const std::string path = convert(name, DType::F32);
        auto model = load_model(path, *backend);
        CHECK(model->vocab.bos_id == 0);  // <|begin_of_text|>, the trainer's first special token
        CHECK(model->vocab.eos_id == 1);  // <|end_of_text|>, tokenizer_config.json's eos_token
        CHECK(model->vocab.add_bos);      // tokenizer_config.json: add_bos_token
        CHECK(tokenize(model->vocab, e.text, true, false) == e.ids);
        const json tc = read_json(fixture_dir(name) + "/tokenizer_config.json");
        CHECK(model->chat_template == tc.at("chat_template").get<std::string>());
        std::remove(path.c_str());
    }
}

// ---- Gemma 3 and DeepSeek-V2: the file as llama.cpp's convert_hf_to_gguf.py writes it ----

namespace {

// A tensor as llama.cpp names and shapes it (ggml order: ne[0] is the row length).
struct TensorSpec {
    std::string name;
    std::vector<int64_t> ne;
};

std::string shape_str(const int64_t* ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

// Every tensor in specs is in the file with that shape, and the file has no other tensor. type_of
// gives each one's expected dtype.
template <class TypeOf>
void check_tensors(const GGUFFile& f, const std::vector<TensorSpec>& specs, TypeOf type_of) {
    std::map<std::string, const TensorSpec*> want;
    for (const auto& s : specs) want[s.name] = &s;
    for (size_t i = 0; i < f.n_tensors(); ++i) {
        const GGUFTensorInfo& t = f.tensor(i);
        CAPTURE(t.name);
        CHECK_MESSAGE(want.count(t.name), "unexpected tensor ", t.name);
    }
    for (const auto& s : specs) {
        CAPTURE(s.name);
        const GGUFTensorInfo* t = f.find_tensor(s.name);
        CHECK_MESSAGE(t, "missing tensor ", s.name);
        if (!t) continue;
        CHECK(shape_str(t->ne, t->n_dims) == shape_str(s.ne.data(), int(s.ne.size())));
        CHECK(std::string(dtype_name(t->type)) == dtype_name(type_of(s)));
    }
}

// llama.cpp's rule for --outtype f16: 1-D tensors (norms) and the MoE router stay F32.
DType llama_cpp_f16_type(const TensorSpec& s) {
    const bool router = s.name.find("ffn_gate_inp") != std::string::npos;
    return s.ne.size() == 1 || router ? DType::F32 : DType::F16;
}

void check_u32(const GGUFFile& f, const std::string& key, uint32_t want) {
    CAPTURE(key);
    REQUIRE_MESSAGE(f.has(key), "missing key ", key);
    CHECK(f.find(key)->is_integer());
    CHECK(f.get_u32(key) == want);
}

void check_f32(const GGUFFile& f, const std::string& key, float want) {
    CAPTURE(key);
    REQUIRE_MESSAGE(f.has(key), "missing key ", key);
    CHECK(f.find(key)->type() == GGUFType::FLOAT32);
    CHECK(f.get_f32(key) == doctest::Approx(want).epsilon(1e-6));
}

// The tokenizer keys llama.cpp writes for a byte-level BPE tokenizer.json with Llama 3's split.
void check_tokenizer_keys(const GGUFFile& f, const std::string& dir) {
    const json tj = read_json(dir + "/tokenizer.json");
    const json tc = read_json(dir + "/tokenizer_config.json");
    CHECK(f.get_str("tokenizer.ggml.model") == "gpt2");
    CHECK(f.get_str("tokenizer.ggml.pre") == "llama-bpe");
    const auto& vocab = tj.at("model").at("vocab");
    const GGUFValue& tokens = f.get_array("tokenizer.ggml.tokens", GGUFType::STRING);
    REQUIRE(tokens.size() == vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        const auto id = it.value().get<uint64_t>();
        CHECK_MESSAGE(std::string(tokens.str(id)) == it.key(), "token ", id);
    }
    // Special (added) tokens are CONTROL (3), the rest NORMAL (1).
    const std::vector<int32_t> types = f.get_array("tokenizer.ggml.token_type").to_i32_vector();
    REQUIRE(types.size() == vocab.size());
    for (size_t id = 0; id < types.size(); ++id) CHECK_MESSAGE(types[id] == (id < 4 ? 3 : 1), "token_type ", id);
    const auto& merges = tj.at("model").at("merges");
    const GGUFValue& gm = f.get_array("tokenizer.ggml.merges", GGUFType::STRING);
    REQUIRE(gm.size() == merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
        const std::string m = merges[i].is_string() ? merges[i].get<std::string>()
                                                    : merges[i][0].get<std::string>() + " " + merges[i][1].get<std::string>();
        CHECK_MESSAGE(std::string(gm.str(i)) == m, "merge ", i);
    }
    check_u32(f, "tokenizer.ggml.bos_token_id", 0);
    check_u32(f, "tokenizer.ggml.eos_token_id", 1);
    CHECK(f.get_bool("tokenizer.ggml.add_bos_token") == true);
    CHECK(f.get_bool("tokenizer.ggml.add_eos_token", false) == false);
    CHECK(f.get_str("tokenizer.chat_template") == tc.at("chat_template").get<std::string>());
}

// The keys every llama.cpp conversion carries.
void check_general_keys(const GGUFFile& f, const std::string& arch, uint32_t file_type) {
    CHECK(f.get_str("general.architecture") == arch);
    check_u32(f, "general.file_type", file_type);  // llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1
    check_u32(f, "general.quantization_version", 2);
}

// One tensor of a single-file checkpoint, as f32 values: safetensors is an 8-byte header length, a
// JSON header naming each tensor's dtype, shape and data_offsets, then the data.
std::vector<float> read_safetensor(const std::string& dir, const std::string& name, std::vector<int64_t>* shape) {
    std::ifstream in(dir + "/model.safetensors", std::ios::binary);
    REQUIRE(in.good());
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    in.read(header.data(), long(n));
    const json h = json::parse(header);
    const json& t = h.at(name);
    REQUIRE(t.at("dtype") == "F32");
    *shape = t.at("shape").get<std::vector<int64_t>>();
    const auto off = t.at("data_offsets").get<std::vector<uint64_t>>();
    std::vector<float> v((off[1] - off[0]) / 4);
    in.seekg(long(8 + n + off[0]));
    in.read(reinterpret_cast<char*>(v.data()), long(v.size() * 4));
    return v;
}

const float* f32_data(const GGUFFile& f, const std::string& name) {
    const GGUFTensorInfo* t = f.find_tensor(name);
    REQUIRE_MESSAGE(t, "missing tensor ", name);
    REQUIRE(t->type == DType::F32);
    return static_cast<const float*>(t->data);
}

// Gemma 3 text, 6 layers (5 local : 1 global), n_embd 64, 4 heads of 16, 2 KV heads, FFN 128,
// vocab 480, tied embeddings (no output.weight).
std::vector<TensorSpec> gemma3_tensors() {
    std::vector<TensorSpec> t = {{"token_embd.weight", {64, 480}}, {"output_norm.weight", {64}}};
    for (int il = 0; il < 6; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        for (const TensorSpec& s : std::vector<TensorSpec>{
                 {"attn_norm.weight", {64}},          {"attn_q.weight", {64, 64}},
                 {"attn_k.weight", {64, 32}},         {"attn_v.weight", {64, 32}},
                 {"attn_q_norm.weight", {16}},        {"attn_k_norm.weight", {16}},
                 {"attn_output.weight", {64, 64}},    {"post_attention_norm.weight", {64}},
                 {"ffn_norm.weight", {64}},           {"ffn_gate.weight", {64, 128}},
                 {"ffn_up.weight", {64, 128}},        {"ffn_down.weight", {128, 64}},
                 {"post_ffw_norm.weight", {64}}})
            t.push_back({p + s.name, s.ne});
    }
    return t;
}

// DeepSeek-V2, n_embd 64, 4 heads, kv_lora_rank 32, qk_nope 16 + qk_rope 8, v_head 16, vocab 480.
// llama.cpp splits kv_b_proj into attn_k_b (transposed per head: [qk_nope, kv_lora, n_head]) and
// attn_v_b ([kv_lora, v_head, n_head]) for absorbed MLA, and stacks the experts into 3-D tensors.
std::vector<TensorSpec> deepseek2_tensors(int n_layer, int n_dense, bool q_lora) {
    std::vector<TensorSpec> t = {{"token_embd.weight", {64, 480}}, {"output_norm.weight", {64}},
                                 {"output.weight", {64, 480}}};
    for (int il = 0; il < n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        std::vector<TensorSpec> l = {{"attn_norm.weight", {64}},          {"attn_kv_a_mqa.weight", {64, 40}},
                                     {"attn_kv_a_norm.weight", {32}},     {"attn_k_b.weight", {16, 32, 4}},
                                     {"attn_v_b.weight", {32, 16, 4}},    {"attn_output.weight", {64, 64}},
                                     {"ffn_norm.weight", {64}}};
        if (q_lora) {  // q_lora_rank 48
            l.push_back({"attn_q_a.weight", {64, 48}});
            l.push_back({"attn_q_a_norm.weight", {48}});
            l.push_back({"attn_q_b.weight", {48, 96}});
        } else {
            l.push_back({"attn_q.weight", {64, 96}});
        }
        if (il < n_dense) {  // dense FFN 128
            l.push_back({"ffn_gate.weight", {64, 128}});
            l.push_back({"ffn_up.weight", {64, 128}});
            l.push_back({"ffn_down.weight", {128, 64}});
        } else {  // 4 routed experts of FFN 32, one shared expert of FFN 32
            l.push_back({"ffn_gate_inp.weight", {64, 4}});
            l.push_back({"ffn_gate_exps.weight", {64, 32, 4}});
            l.push_back({"ffn_up_exps.weight", {64, 32, 4}});
            l.push_back({"ffn_down_exps.weight", {32, 64, 4}});
            l.push_back({"ffn_gate_shexp.weight", {64, 32}});
            l.push_back({"ffn_up_shexp.weight", {64, 32}});
            l.push_back({"ffn_down_shexp.weight", {32, 64}});
        }
        for (const auto& s : l) t.push_back({p + s.name, s.ne});
    }
    return t;
}

}  // namespace

TEST_CASE("gemma3: every key and tensor as llama.cpp writes them; norms shifted by one") {
    const std::string dir = fixture_dir("gemma3");
    for (DType type : {DType::F32, DType::F16}) {
        const std::string type_name = dtype_name(type);
        CAPTURE(type_name);
        const std::string path = convert("gemma3", type);
        {
            const GGUFFile f = GGUFFile::open(path);
            check_general_keys(f, "gemma3", type == DType::F32 ? 0 : 1);
            check_u32(f, "gemma3.block_count", 6);
            check_u32(f, "gemma3.context_length", 2048);
            check_u32(f, "gemma3.embedding_length", 64);
            check_u32(f, "gemma3.feed_forward_length", 128);
            check_u32(f, "gemma3.attention.head_count", 4);
            check_u32(f, "gemma3.attention.head_count_kv", 2);
            check_u32(f, "gemma3.attention.key_length", 16);
            check_u32(f, "gemma3.attention.value_length", 16);
            check_u32(f, "gemma3.attention.sliding_window", 8);
            check_f32(f, "gemma3.attention.layer_norm_rms_epsilon", 1e-6f);
            check_f32(f, "gemma3.rope.freq_base", 1e6f);  // the global layers' theta
            CHECK_FALSE(f.has("gemma3.final_logit_softcapping"));  // null in config.json
            check_tokenizer_keys(f, dir);
            if (type == DType::F32) {
                check_tensors(f, gemma3_tensors(), [](const TensorSpec&) { return DType::F32; });
                // Gemma3RMSNorm multiplies by (1 + weight); llama.cpp stores 1 + weight.
                std::vector<int64_t> shape;
                const auto hf = read_safetensor(dir, "model.layers.0.input_layernorm.weight", &shape);
                const float* g = f32_data(f, "blk.0.attn_norm.weight");
                for (size_t i = 0; i < hf.size(); ++i) CHECK(g[i] == hf[i] + 1.0f);
                const auto qn = read_safetensor(dir, "model.layers.5.self_attn.q_norm.weight", &shape);
                const float* gq = f32_data(f, "blk.5.attn_q_norm.weight");
                for (size_t i = 0; i < qn.size(); ++i) CHECK(gq[i] == qn[i] + 1.0f);
                // Not permuted (Gemma uses NeoX rope): attn_q is q_proj as stored.
                const auto q = read_safetensor(dir, "model.layers.1.self_attn.q_proj.weight", &shape);
                CHECK(std::memcmp(f32_data(f, "blk.1.attn_q.weight"), q.data(), q.size() * 4) == 0);
            } else {
                check_tensors(f, gemma3_tensors(), llama_cpp_f16_type);
            }
        }
        std::remove(path.c_str());
    }
}

TEST_CASE("deepseek2: every key and tensor as llama.cpp writes them; kv_b_proj split per head") {
    struct Case {
        const char* name;
        int n_layer, n_dense;
        bool q_lora;
    };
    for (const Case c : {Case{"deepseek2_dense", 2, 2, false}, Case{"deepseek2_moe", 3, 1, true}}) {
        const std::string name = c.name;
        CAPTURE(name);
        const std::string dir = fixture_dir(c.name);
        for (DType type : {DType::F32, DType::F16}) {
            const std::string type_name = dtype_name(type);
            CAPTURE(type_name);
            const std::string path = convert(c.name, type);
            {
                const GGUFFile f = GGUFFile::open(path);
                check_general_keys(f, "deepseek2", type == DType::F32 ? 0 : 1);
                check_u32(f, "deepseek2.block_count", uint32_t(c.n_layer));
                check_u32(f, "deepseek2.context_length", 2048);
                check_u32(f, "deepseek2.embedding_length", 64);
                check_u32(f, "deepseek2.feed_forward_length", 128);
                check_u32(f, "deepseek2.attention.head_count", 4);
                check_u32(f, "deepseek2.attention.head_count_kv", 1);  // MLA is written as MQA over the latent
                check_u32(f, "deepseek2.vocab_size", 480);
                check_u32(f, "deepseek2.leading_dense_block_count", uint32_t(c.n_dense));
                if (c.q_lora)
                    check_u32(f, "deepseek2.attention.q_lora_rank", 48);
                else
                    CHECK_FALSE(f.has("deepseek2.attention.q_lora_rank"));
                check_u32(f, "deepseek2.attention.kv_lora_rank", 32);
                check_u32(f, "deepseek2.attention.key_length", 40);      // kv_lora_rank + qk_rope
                check_u32(f, "deepseek2.attention.value_length", 32);    // kv_lora_rank
                check_u32(f, "deepseek2.attention.key_length_mla", 24);  // qk_nope + qk_rope
                check_u32(f, "deepseek2.attention.value_length_mla", 16);
                check_u32(f, "deepseek2.rope.dimension_count", 8);       // qk_rope_head_dim
                check_f32(f, "deepseek2.rope.freq_base", 10000.0f);
                check_f32(f, "deepseek2.attention.layer_norm_rms_epsilon", 1e-6f);
                check_u32(f, "deepseek2.expert_feed_forward_length", 32);
                check_u32(f, "deepseek2.expert_count", 4);
                check_u32(f, "deepseek2.expert_used_count", 2);
                check_u32(f, "deepseek2.expert_shared_count", 1);
                check_f32(f, "deepseek2.expert_weights_scale", 1.0f);       // routed_scaling_factor
                CHECK_FALSE(f.has("deepseek2.expert_weights_norm"));        // norm_topk_prob false
                if (f.has("deepseek2.expert_gating_func"))
                    check_u32(f, "deepseek2.expert_gating_func", 1);        // softmax (V2)
                check_tokenizer_keys(f, dir);
                const auto specs = deepseek2_tensors(c.n_layer, c.n_dense, c.q_lora);
                if (type == DType::F32) {
                    check_tensors(f, specs, [](const TensorSpec&) { return DType::F32; });
                    // kv_b_proj [n_head * (qk_nope + v_head), kv_lora] split per head:
                    // k_b[h][r][n] = kv_b[h * 32 + n][r], v_b[h][j][r] = kv_b[h * 32 + 16 + j][r].
                    std::vector<int64_t> shape;
                    const auto kvb = read_safetensor(dir, "model.layers.1.self_attn.kv_b_proj.weight", &shape);
                    REQUIRE(shape == std::vector<int64_t>{128, 32});
                    const float* kb = f32_data(f, "blk.1.attn_k_b.weight");
                    const float* vb = f32_data(f, "blk.1.attn_v_b.weight");
                    size_t bad_k = 0, bad_v = 0;
                    for (int h = 0; h < 4; ++h)
                        for (int r = 0; r < 32; ++r)
                            for (int n = 0; n < 16; ++n) {
                                bad_k += kb[(h * 32 + r) * 16 + n] != kvb[size_t(h * 32 + n) * 32 + r];
                                bad_v += vb[(h * 16 + n) * 32 + r] != kvb[size_t(h * 32 + 16 + n) * 32 + r];
                            }
                    CHECK(bad_k == 0);
                    CHECK(bad_v == 0);
                    if (c.n_dense < c.n_layer) {  // experts stacked in expert order
                        const auto e2 = read_safetensor(dir, "model.layers.1.mlp.experts.2.down_proj.weight", &shape);
                        const float* d = f32_data(f, "blk.1.ffn_down_exps.weight");
                        CHECK(std::memcmp(d + 2 * e2.size(), e2.data(), e2.size() * 4) == 0);
                    }
                } else {
                    check_tensors(f, specs, llama_cpp_f16_type);
                }
            }
            std::remove(path.c_str());
        }
    }
}
