// Whole models on the CPU backend: a tiny random llama/qwen2 against a double-precision reference
// forward pass written here, load errors, and SmolLM2-135M against llama.cpp's greedy outputs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"
#include "golden.h"
#include "model_fixture.h"
#include "models/model.h"
#include "models/session.h"
#include "models/tokenizer.h"

using namespace mf;
using mf_test::max_rel_diff;
using mf_test::random_tokens;
using mf_test::GoldenCase;
using mf_test::read_golden;

namespace {

// A plain double-precision forward pass over f32 weights read straight from the file: the
// specification the graph builder must match (llama: RoPE on pairs; qwen2: NeoX halves + biases).
class ReferenceLlama {
public:
    explicit ReferenceLlama(const std::string& path) : file_(GGUFFile::open(path)), hp_(load_hparams(file_)) {}

    // Logits after each of tokens, fed one by one from position 0.
    std::vector<std::vector<double>> run(const std::vector<int32_t>& tokens) {
        std::vector<std::vector<double>> out;
        kcache_.assign(hp_.n_layer, {});
        vcache_.assign(hp_.n_layer, {});
        for (size_t p = 0; p < tokens.size(); ++p) out.push_back(step(tokens[p], int(p)));
        return out;
    }

private:
    const float* w(const std::string& name) {
        const GGUFTensorInfo* t = file_.find_tensor(name);
        REQUIRE(t);
        REQUIRE(t->type == DType::F32);
        return static_cast<const float*>(t->data);
    }
    // y[o] = sum_i W[o * n_in + i] x[i] (+ b[o]): GGUF stores [n_in, n_out] with n_in fastest.
    std::vector<double> linear(const std::string& name, const std::vector<double>& x, size_t n_out,
                               const std::string& bias = "") {
        const float* W = w(name);
        const float* b = bias.empty() || !file_.find_tensor(bias) ? nullptr : w(bias);
        std::vector<double> y(n_out);
        for (size_t o = 0; o < n_out; ++o) {
            double s = b ? b[o] : 0.0;
            for (size_t i = 0; i < x.size(); ++i) s += double(W[o * x.size() + i]) * x[i];
            y[o] = s;
        }
        return y;
    }
    std::vector<double> norm(const std::vector<double>& x, const std::string& name) {
        double ss = 0;
        for (double v : x) ss += v * v;
        const double r = 1.0 / std::sqrt(ss / double(x.size()) + hp_.norm_eps);
        const float* g = w(name);
        std::vector<double> y(x.size());
        for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * g[i];
        return y;
    }
    void rope(double* v, int pos) {
        const int n = int(hp_.n_rot);
        const GGUFTensorInfo* ff = file_.find_tensor("rope_freqs.weight");
        for (int i = 0; i < n / 2; ++i) {
            const double factor = ff ? double(static_cast<const float*>(ff->data)[i]) : 1.0;
            const double theta = pos * std::pow(double(hp_.rope_freq_base), -2.0 * i / n) / factor;
            const int a = hp_.rope_mode == ROPE_NEOX ? i : 2 * i;
            const int b = hp_.rope_mode == ROPE_NEOX ? i + n / 2 : 2 * i + 1;
            const double x0 = v[a], x1 = v[b];
            v[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
            v[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
        }
    }
    std::vector<double> step(int32_t token, int pos) {
        const size_t E = hp_.n_embd, H = hp_.n_head, D = hp_.head_dim_k;
        std::vector<double> x(E);
        const float* emb = w("token_embd.weight");
        for (size_t i = 0; i < E; ++i) x[i] = emb[size_t(token) * E + i];
        for (uint32_t il = 0; il < hp_.n_layer; ++il) {
            const std::string p = "blk." + std::to_string(il) + ".";
            const size_t KV = hp_.n_head_kv[il];
            auto h = norm(x, p + "attn_norm.weight");
            auto q = linear(p + "attn_q.weight", h, H * D, p + "attn_q.bias");
            auto k = linear(p + "attn_k.weight", h, KV * D, p + "attn_k.bias");
            auto v = linear(p + "attn_v.weight", h, KV * D, p + "attn_v.bias");
            for (size_t hh = 0; hh < H; ++hh) rope(&q[hh * D], pos);
            for (size_t hh = 0; hh < KV; ++hh) rope(&k[hh * D], pos);
            // The cache stores f16: round as it does, so what remains is f32 arithmetic error.
            for (auto* kv : {&k, &v})
                for (double& e : *kv) e = fp16_to_fp32(fp32_to_fp16(float(e)));
            kcache_[il].push_back(k);
            vcache_[il].push_back(v);
            std::vector<double> att(H * D, 0.0);
            for (size_t hh = 0; hh < H; ++hh) {
                const size_t g = hh / (H / KV);  // consecutive query heads share a KV head
                std::vector<double> s(kcache_[il].size());
                double mx = -1e300;
                for (size_t t = 0; t < s.size(); ++t) {
                    double d = 0;
                    for (size_t j = 0; j < D; ++j) d += q[hh * D + j] * kcache_[il][t][g * D + j];
                    s[t] = d / std::sqrt(double(D));
                    mx = std::max(mx, s[t]);
                }
                double z = 0;
                for (double& e : s) z += (e = std::exp(e - mx));
                for (size_t t = 0; t < s.size(); ++t)
                    for (size_t j = 0; j < D; ++j) att[hh * D + j] += s[t] / z * vcache_[il][t][g * D + j];
            }
            auto o = linear(p + "attn_output.weight", att, E);
            for (size_t i = 0; i < E; ++i) x[i] += o[i];
            h = norm(x, p + "ffn_norm.weight");
            auto gate = linear(p + "ffn_gate.weight", h, hp_.n_ff);
            auto up = linear(p + "ffn_up.weight", h, hp_.n_ff);
            for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
            auto down = linear(p + "ffn_down.weight", gate, E);
            for (size_t i = 0; i < E; ++i) x[i] += down[i];
        }
        x = norm(x, "output_norm.weight");
        return linear(file_.find_tensor("output.weight") ? "output.weight" : "token_embd.weight", x, hp_.n_vocab);
    }

    GGUFFile file_;
    HParams hp_;
    std::vector<std::vector<std::vector<double>>> kcache_, vcache_;  // [layer][pos][kv_dim]
};




}  // namespace

constexpr double kTinyTolerance = 1e-3;  // see the comment in the test below

TEST_CASE("tiny llama and qwen2 match the double-precision reference, decode and prefill alike") {
    for (const std::string arch : {"llama", "qwen2"}) {
        for (uint32_t n_head_kv : {4u, 2u, 1u}) {  // MHA, GQA, MQA
            CAPTURE(arch);
            CAPTURE(n_head_kv);
            mf_test::TinyLlama tiny;
            tiny.arch = arch;
            tiny.n_head_kv = n_head_kv;
            const std::string path = mf_test::temp_path(arch + "_tiny.gguf");
            tiny.write(path);
            auto backend = make_cpu_backend(2);
            auto model = load_model(path, *backend);
            CHECK(model->hp.attn_kind(0) == (n_head_kv == 4 ? AttnKind::MHA : n_head_kv == 1 ? AttnKind::MQA : AttnKind::GQA));
            if (arch == "qwen2") CHECK(model->layers[1].bv != nullptr);
            // One type throughout: q, k, v (and their biases) and gate, up are stacked, one matmul
            // each, and the parts still read their own rows of the file.
            const LayerWeights& l1 = model->layers[1];
            REQUIRE(l1.wqkv != nullptr);
            CHECK(l1.ffn_gate_up != nullptr);
            CHECK((l1.bqkv != nullptr) == (arch == "qwen2"));
            CHECK(l1.wqkv->ne[1] == l1.wq->ne[1] + l1.wk->ne[1] + l1.wv->ne[1]);
            {
                const GGUFFile file = GGUFFile::open(path);
                const GGUFTensorInfo* info = file.find_tensor("blk.1.attn_v.weight");
                REQUIRE(info != nullptr);
                std::vector<char> got(info->n_bytes);
                tensor_get(l1.wv, got.data());
                CHECK(std::memcmp(got.data(), info->data, info->n_bytes) == 0);
            }

            const std::vector<int32_t> tokens = random_tokens(9, int32_t(tiny.n_vocab));
            ReferenceLlama ref(path);
            const auto expect = ref.run(tokens);

            // Token by token: every step's logits. f32 arithmetic alone stays near 1e-5; the f16 cache
            // adds more: a K or V value whose f32 and float64 computations fall on either side of an
            // f16 rounding boundary differs by one f16 step (2^-11 relative) and carries through the
            // layers. Measured over 40 seeds: at most 2.6e-4. A broken op is off by O(1).
            Session s1(*model, SessionParams{64, 256});
            for (size_t i = 0; i < tokens.size(); ++i) {
                const auto& logits = i == 0 ? s1.prefill({tokens[0]}) : s1.decode(tokens[i]);
                CHECK(max_rel_diff(logits, expect[i]) < kTinyTolerance);
            }
            // One prefill, and a prefill chunked by n_batch = 4: the last token's logits.
            Session s2(*model, SessionParams{64, 256});
            CHECK(max_rel_diff(s2.prefill(tokens), expect.back()) < kTinyTolerance);
            Session s3(*model, SessionParams{64, 4});
            CHECK(max_rel_diff(s3.prefill(tokens), expect.back()) < kTinyTolerance);
            CHECK(s3.n_past() == tokens.size());
            std::remove(path.c_str());
        }
    }
}

TEST_CASE("Llama 3.1-style rope frequency factors (rope_freqs.weight) divide the angles") {
    mf_test::TinyLlama tiny;
    tiny.rope_freqs = true;
    const std::string path = mf_test::temp_path("rope_freqs.gguf");
    tiny.write(path);
    auto backend = make_cpu_backend(2);
    auto model = load_model(path, *backend);
    REQUIRE(model->rope_freqs != nullptr);
    const std::vector<int32_t> tokens = random_tokens(40, int32_t(tiny.n_vocab));  // far enough to matter
    ReferenceLlama ref(path);
    const auto expect = ref.run(tokens);
    Session s(*model, SessionParams{64, 256});
    CHECK(max_rel_diff(s.prefill(tokens), expect.back()) < kTinyTolerance);
    std::remove(path.c_str());
}

// On the CPU the weights stay in the file's mapping, and a stack is made only of parts back to back
// there. A qwen2 file aligned to 128 bytes with one KV head holds q, k and v back to back but pads
// between their 64-, 16- and 16-float biases: q, k and v must then stay three matmuls, each with its
// bias (stacking the weights alone dropped the biases), giving the copied, stacked model's bits.
TEST_CASE("a mapped qwen2 model stacks q, k and v only together with their biases") {
    mf_test::TinyLlama tiny;
    tiny.arch = "qwen2";
    tiny.n_head_kv = 1;
    tiny.extra_kv.emplace("general.alignment", GGUFMetaValue::u32(128));
    const std::string path = mf_test::temp_path("qwen2_mapped.gguf");
    tiny.write(path);
    auto mapping = make_cpu_backend(2), copying = make_cpu_backend(2, false);
    auto mapped = load_model(path, *mapping);
    auto copied = load_model(path, *copying);
    REQUIRE(mapped->mapped_buffer != nullptr);
    CHECK(copied->layers[0].wqkv != nullptr);
    CHECK(copied->layers[0].bqkv != nullptr);
    CHECK(mapped->layers[0].wqkv == nullptr);
    CHECK(mapped->layers[0].bqkv == nullptr);
    const std::vector<int32_t> tokens = random_tokens(9, int32_t(tiny.n_vocab));
    Session a(*mapped, SessionParams{64, 256}), b(*copied, SessionParams{64, 256});
    CHECK(a.prefill(tokens) == b.prefill(tokens));
    CHECK(a.decode(tokens[0]) == b.decode(tokens[0]));
    std::remove(path.c_str());
}

TEST_CASE("a session rewound with truncate continues exactly like a fresh one") {
    mf_test::TinyLlama tiny;
    const std::string path = mf_test::temp_path("truncate.gguf");
    tiny.write(path);
    auto backend = make_cpu_backend(2);
    auto model = load_model(path, *backend);
    const std::vector<int32_t> a = random_tokens(7, 40), b = random_tokens(5, 40);
    // Fresh: a[0..4) then b, decoded one by one after a prefill.
    Session fresh(*model, SessionParams{64, 256});
    fresh.prefill(std::vector<int32_t>(a.begin(), a.begin() + 4));
    std::vector<std::vector<float>> want;
    for (int32_t t : b) want.push_back(fresh.decode(t));
    // Rewound: all of a and some decodes, back to 4 positions, then the same steps.
    Session s(*model, SessionParams{64, 256});
    s.prefill(a);
    s.decode(b[0]);
    s.decode(b[1]);
    s.truncate(4);
    CHECK(s.tokens() == std::vector<int32_t>(a.begin(), a.begin() + 4));
    for (size_t i = 0; i < b.size(); ++i) CHECK(s.decode(b[i]) == want[i]);  // bit-identical on one backend
    std::remove(path.c_str());
}

TEST_CASE("prefill_all returns every position's logits, the same as decoding one token at a time") {
    mf_test::TinyLlama tiny;
    const std::string path = mf_test::temp_path("all_logits.gguf");
    tiny.write(path);
    auto backend = make_cpu_backend(2);
    auto model = load_model(path, *backend);
    const std::vector<int32_t> toks = random_tokens(11, 40);
    Session one(*model, SessionParams{64, 256});
    // Batches of 4 cross chunk boundaries; the last chunk is shorter.
    Session all(*model, SessionParams{64, 4});
    const std::vector<float> got = all.prefill_all(toks);
    REQUIRE(got.size() == toks.size() * 40);
    for (size_t i = 0; i < toks.size(); ++i) {
        const std::vector<float>& want = one.decode(toks[i]);
        for (size_t j = 0; j < 40; ++j) CHECK(got[i * 40 + j] == doctest::Approx(want[j]).epsilon(1e-4));
    }
    CHECK(all.n_past() == toks.size());
    std::remove(path.c_str());
}

TEST_CASE("a qwen2 file without its Q/K/V biases fails to load, naming the tensor") {
    mf_test::TinyLlama tiny;
    tiny.arch = "qwen2";
    tiny.drop_tensors = {"blk.0.attn_q.bias"};
    const std::string path = mf_test::temp_path("qwen2_nobias.gguf");
    tiny.write(path);
    auto backend = make_cpu_backend(1);
    CHECK_THROWS_WITH_AS(load_model(path, *backend), doctest::Contains("missing tensor 'blk.0.attn_q.bias'"), Error);
    std::remove(path.c_str());
}

TEST_CASE("bad model files are one clear error naming the problem") {
    auto backend = make_cpu_backend(1);
    auto expect_error = [&](mf_test::TinyLlama tiny, const char* fragment) {
        const std::string path = mf_test::temp_path("bad.gguf");
        tiny.write(path);
        CHECK_THROWS_WITH_AS(load_model(path, *backend), doctest::Contains(fragment), Error);
        std::remove(path.c_str());
    };
    mf_test::TinyLlama base;
    SUBCASE("unknown architecture") {
        auto t = base;
        t.arch = "gptj";
        expect_error(t, "unknown architecture 'gptj' (supported: llama, qwen2, gemma3, deepseek2)");
    }
    SUBCASE("missing key") {
        auto t = base;
        t.drop_keys = {"llama.embedding_length"};
        expect_error(t, "llama.embedding_length");
    }
    SUBCASE("head_count_kv that does not divide head_count") {
        auto t = base;
        t.extra_kv.emplace("llama.attention.head_count_kv", GGUFMetaValue::u32(3));
        expect_error(t, "attention.head_count_kv");
    }
    SUBCASE("missing tensor") {
        auto t = base;
        t.drop_tensors = {"blk.1.ffn_up.weight"};
        expect_error(t, "missing tensor 'blk.1.ffn_up.weight'");
    }
    SUBCASE("tensor of the wrong shape") {
        auto t = base;
        t.reshape["blk.0.attn_k.weight"] = {64, 48};
        expect_error(t, "tensor 'blk.0.attn_k.weight' has shape [64, 48, 1, 1], expected [64, 32, 1, 1]");
    }
    SUBCASE("not a GGUF file") {
        CHECK_THROWS_AS(load_model(mf_test::source_path("README.md"), *backend), Error);
    }
    SUBCASE("missing file") {
        CHECK_THROWS_AS(load_model("/nonexistent/model.gguf", *backend), Error);
    }
}

TEST_CASE("a prompt larger than the context is refused, not truncated") {
    mf_test::TinyLlama tiny;
    const std::string path = mf_test::temp_path("ctx.gguf");
    tiny.write(path);
    auto backend = make_cpu_backend(1);
    auto model = load_model(path, *backend);
    Session s(*model, SessionParams{8, 256});
    CHECK_THROWS_WITH_AS(s.prefill(random_tokens(9, 40)), doctest::Contains("raise -c"), Error);
    s.prefill(random_tokens(8, 40));
    CHECK_THROWS_WITH_AS(s.decode(5), doctest::Contains("context is full"), Error);
    std::remove(path.c_str());
}

// Choices are compared where llama.cpp's top-1 leads by tests/golden.h's kSmolLM2ClearMargin: below it
// (4 of 192 steps, margins <= 0.16) llama.cpp's choice and ours differ.
TEST_CASE("SmolLM2-135M Q4_1: the tokenizer and greedy decoding match llama.cpp") {
    const std::string path = mf_test::smollm2_path();
    REQUIRE_MESSAGE(std::ifstream(path).good(), "missing ", path, " (run `make model`)");
    auto backend = make_cpu_backend(0);
    auto model = load_model(path, *backend);
    const auto cases = read_golden(mf_test::source_path("tests/fixtures/golden/smollm2_greedy.txt"));
    REQUIRE(cases.size() >= 5);
    mf_test::GoldenStats st;
    for (const auto& c : cases) check_golden_case(*model, c, SessionParams{512, 256}, mf_test::kSmolLM2ClearMargin,
                                                   mf_test::kSmolLM2LogitTolerance, st);
    MESSAGE("greedy choices equal to llama.cpp's: ", st.same, " of ", st.steps, "; free-running tokens identical before ",
            "the first near tie: ", st.free_run, "; largest |logit - llama.cpp's| of its choice: ", st.worst_logit);
    CHECK(double(st.same) >= 0.95 * double(st.steps));
}
