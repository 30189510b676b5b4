// `minfer synth` files (models/synth.h): each shape loads with its table's hyperparameters and runs
// to finite logits, weights are drawn at the stated scales, equal options give equal bytes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"
#include "model_fixture.h"
#include "models/kv_plan.h"
#include "models/model.h"
#include "models/session.h"
#include "models/synth.h"
#include "models/tokenizer.h"

using namespace mf;

namespace {

SynthOptions options(const std::string& shape, const std::string& type, uint32_t n_layer, const std::string& file) {
    SynthOptions o;
    o.shape = shape;
    o.type = type;
    o.n_layer = n_layer;
    o.path = mf_test::temp_path(file);
    o.seed = mf_test::seed();
    o.n_threads = 2;
    return o;
}

bool all_finite(const std::vector<float>& v) {
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

// Prefills the text's tokens, then decodes n_decode times (greedy); every step's logits must be
// finite and not all equal (a model whose weights were never written gives equal logits).
void check_runs(const Model& model, int n_decode = 2) {
    Session s(model, SessionParams{64, 256});
    const std::vector<int32_t> prompt = tokenize(model.vocab, "hello world, the quick brown fox", true, false);
    REQUIRE(prompt.size() >= 4);
    CHECK(prompt[0] == 1);  // BOS
    std::vector<float> logits = s.prefill(prompt);
    for (int step = 0; step <= n_decode; ++step) {
        CAPTURE(step);
        REQUIRE(logits.size() == model.hp.n_vocab);
        CHECK(all_finite(logits));
        const auto [lo, hi] = std::minmax_element(logits.begin(), logits.end());
        CHECK(*hi - *lo > 1e-3f);
        if (step < n_decode) logits = s.decode(int32_t(hi - logits.begin()));
    }
    CHECK(s.n_past() == prompt.size() + size_t(n_decode));
}

// Mean and standard deviation of a tensor's first rows, dequantized.
std::pair<double, double> moments(const GGUFTensorInfo& t, int64_t n_rows) {
    const DTypeTraits& tr = dtype_traits(t.type);
    const size_t row_bytes = dtype_row_size(t.type, t.ne[0]);
    std::vector<float> row(size_t(t.ne[0]));
    double sum = 0, sum2 = 0, n = 0;
    for (int64_t r = 0; r < std::min(n_rows, t.ne[1]); ++r) {
        tr.to_float(static_cast<const uint8_t*>(t.data) + size_t(r) * row_bytes, row.data(), t.ne[0]);
        for (float x : row) sum += x, sum2 += double(x) * x, n += 1;
    }
    const double mean = sum / n;
    return {mean, std::sqrt(sum2 / n - mean * mean)};
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("smollm2-135m at q4_0 with 2 layers loads with the table's hyperparameters and runs") {
    const SynthOptions o = options("smollm2-135m", "q4_0", 2, "synth_smollm2.gguf");
    const SynthSummary summary = write_synth_model(o);
    CHECK(summary.n_tensors == 1 + 2 * 9 + 1);  // embedding, 9 per layer, output norm (tied output)
    auto backend = make_cpu_backend(2);
    auto model = load_model(o.path, *backend);
    const HParams& hp = model->hp;
    CHECK(hp.arch == "llama");
    CHECK(hp.n_embd == 576);
    CHECK(hp.n_layer == 2);
    CHECK(hp.n_head == 9);
    CHECK(hp.n_head_kv == std::vector<uint32_t>{3, 3});
    CHECK(hp.head_dim_k == 64);
    CHECK(hp.n_rot == 64);
    CHECK(hp.n_ff == 1536);
    CHECK(hp.n_vocab == 49152);
    CHECK(hp.n_ctx_train == 8192);
    CHECK(hp.rope_freq_base == 100000.0f);
    CHECK(hp.rope_mode == ROPE_NORMAL);
    CHECK(model->output == model->tok_embd);  // tied
    CHECK(model->tok_embd->type == DType::Q4_0);
    CHECK(model->layers[1].ffn_down->type == DType::Q4_0);
    CHECK(model->layers[1].attn_norm->type == DType::F32);
    check_runs(*model);

    // The vocabulary turns text into its own pieces and back.
    const std::vector<int32_t> ids = tokenize(model->vocab, "hello world", false, false);
    CHECK(detokenize(model->vocab, ids) == "hello world");
    std::remove(o.path.c_str());
}

TEST_CASE("qwen2-0.5b at q8_0 with 1 layer loads with its biases and NeoX rope, and runs") {
    const SynthOptions o = options("qwen2-0.5b", "q8_0", 1, "synth_qwen2.gguf");
    write_synth_model(o);
    auto backend = make_cpu_backend(2);
    auto model = load_model(o.path, *backend);
    const HParams& hp = model->hp;
    CHECK(hp.arch == "qwen2");
    CHECK(hp.n_embd == 896);
    CHECK(hp.n_layer == 1);
    CHECK(hp.n_head == 14);
    CHECK(hp.n_head_kv == std::vector<uint32_t>{2});
    CHECK(hp.head_dim_k == 64);
    CHECK(hp.n_ff == 4864);
    CHECK(hp.n_vocab == 151936);
    CHECK(hp.n_ctx_train == 32768);
    CHECK(hp.rope_freq_base == 1000000.0f);
    CHECK(hp.norm_eps == 1e-6f);
    CHECK(hp.rope_mode == ROPE_NEOX);
    CHECK(hp.qkv_bias);
    REQUIRE(model->layers[0].bk != nullptr);
    CHECK(model->layers[0].bk->type == DType::F32);
    CHECK(model->output == model->tok_embd);
    CHECK(model->tok_embd->type == DType::Q8_0);
    check_runs(*model);
    std::remove(o.path.c_str());
}

// Most of this test's time (about 3 of its 4 s on 2 threads) is writing: the 102400 x 2048
// embedding and output matrices and layer 1's 64 experts (3 x 64 x 1408 x 2048 values) are 1.1 GB
// of q8_0; fewer layers would drop the experts this test is for.
TEST_CASE("deepseek-v2-lite at q8_0 with 2 layers: V2-Lite's MLA, a dense layer 0, experts after, and it runs") {
    const SynthOptions o = options("deepseek-v2-lite", "q8_0", 2, "synth_deepseek_v2_lite.gguf");
    const SynthSummary summary = write_synth_model(o);
    CHECK(summary.n_tensors == 1 + 11 + 15 + 2);  // embedding, dense layer, MoE layer, output norm and matrix
    auto backend = make_cpu_backend(2);
    auto model = load_model(o.path, *backend);
    const HParams& hp = model->hp;
    CHECK(hp.arch == "deepseek2");
    CHECK(hp.n_layer == 2);
    CHECK(hp.n_embd == 2048);
    CHECK(hp.n_head == 16);
    CHECK(hp.n_head_kv == std::vector<uint32_t>{1, 1});  // one latent row serves every head
    CHECK(hp.attn_kind(0) == AttnKind::MLA);
    CHECK(hp.kv_lora_rank == 512);
    CHECK(hp.q_lora_rank == 0);
    CHECK(hp.n_rot == 64);
    CHECK(hp.head_dim_k == 576);  // the cache row: c_kv 512 + k_pe 64
    CHECK(hp.head_dim_v == 512);
    CHECK(hp.head_dim_k_mla == 192);  // qk_nope 128 + rope 64
    CHECK(hp.head_dim_v_mla == 128);
    CHECK(hp.n_ff == 10944);
    CHECK(hp.n_vocab == 102400);
    CHECK(hp.n_ctx_train == 163840);
    CHECK(hp.rope_freq_base == 10000.0f);
    CHECK(hp.norm_eps == 1e-6f);
    CHECK(hp.rope_mode == ROPE_NORMAL);
    CHECK(hp.n_layer_dense_lead == 1);
    CHECK(hp.n_expert == 64);
    CHECK(hp.n_expert_used == 6);
    CHECK(hp.n_expert_shared == 2);
    CHECK(hp.n_ff_exp == 1408);
    CHECK(hp.expert_weights_scale == 1.0f);
    CHECK_FALSE(hp.expert_weights_norm);
    CHECK(hp.expert_gating == HParams::ExpertGating::SOFTMAX);
    CHECK(hp.yarn_factor == 40.0f);
    CHECK(hp.yarn_n_ctx_orig == 4096);
    CHECK(hp.yarn_log_mul == 0.0707f);
    const double mscale = 1.0 + 0.0707 * std::log(40.0);
    CHECK(hp.kq_scale == doctest::Approx(mscale * mscale / std::sqrt(192.0)).epsilon(1e-6));
    REQUIRE(model->rope_freqs != nullptr);  // YaRN's per-pair factors

    const LayerWeights& dense = model->layers[0];
    const LayerWeights& moe = model->layers[1];
    CHECK(dense.wq != nullptr);  // no q_lora: plain attn_q
    CHECK(dense.wk_b != nullptr);
    CHECK(dense.wv_b != nullptr);
    CHECK(dense.wkv_b == nullptr);  // the split layout
    CHECK(dense.ffn_gate != nullptr);
    CHECK(dense.ffn_gate_inp == nullptr);
    REQUIRE(moe.ffn_gate_inp != nullptr);
    CHECK(moe.ffn_gate_inp->type == DType::F32);  // the router stays f32
    CHECK(moe.ffn_gate == nullptr);
    REQUIRE(moe.ffn_down_exps != nullptr);
    CHECK(moe.ffn_down_exps->type == DType::Q8_0);
    CHECK(moe.ffn_down_exps->ne[0] == 1408);
    CHECK(moe.ffn_down_exps->ne[1] == 2048);
    CHECK(moe.ffn_down_exps->ne[2] == 64);
    REQUIRE(moe.ffn_gate_shexp != nullptr);
    CHECK(moe.ffn_gate_shexp->ne[1] == 2 * 1408);  // the two shared experts as one FFN
    CHECK(model->output != model->tok_embd);
    CHECK(model->tok_embd->type == DType::Q8_0);

    // The f16 cache holds one 576-value latent row per token and layer: 1152 bytes.
    const KVPlan plan = plan_kv_cache(hp, KVOverrides{}, 64, 16);
    REQUIRE(plan.layers.size() == 2);
    for (const KVLayerPlan& l : plan.layers) {
        CHECK(l.kind == AttnKind::MLA);
        CHECK(l.type_k == DType::F16);
        CHECK(l.width_k == 576);
        CHECK(l.width_v == 0);
        CHECK(l.bytes == size_t(64) * 1152);
    }
    check_runs(*model, 6);
    std::remove(o.path.c_str());
}

TEST_CASE("the file carries llama.cpp's general keys and weights at the stated scales") {
    const SynthOptions o = options("smollm2-135m", "q8_0", 1, "synth_scales.gguf");
    write_synth_model(o);
    const GGUFFile f = GGUFFile::open(o.path);
    CHECK(f.get_str("general.name") == "minfer synth smollm2-135m");
    CHECK(f.get_u32("general.file_type") == 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
    CHECK(f.get_u32("general.quantization_version") == 2);
    CHECK(f.get_str("tokenizer.ggml.model") == "llama");

    // 64 rows of 576 values: the sample std of std 0.02 values is within 2% (q8_0 adds < 0.1%);
    // 5% bounds leave room. Means sit within a few sigma / sqrt(n).
    const auto [embd_mean, embd_std] = moments(*f.find_tensor("token_embd.weight"), 64);
    CHECK(std::fabs(embd_mean) < 0.001);
    CHECK(embd_std == doctest::Approx(0.02).epsilon(0.05));
    const auto [down_mean, down_std] = moments(*f.find_tensor("blk.0.ffn_down.weight"), 64);
    CHECK(std::fabs(down_mean) < 0.001);
    CHECK(down_std == doctest::Approx(0.02).epsilon(0.05));
    // A norm weight: one row of 576 values around 1 with std 0.05 (sample std within ~6%).
    const auto [norm_mean, norm_std] = moments(*f.find_tensor("blk.0.attn_norm.weight"), 1);
    CHECK(norm_mean == doctest::Approx(1.0).epsilon(0.02));
    CHECK(norm_std == doctest::Approx(0.05).epsilon(0.2));
    std::remove(o.path.c_str());
}

TEST_CASE("K-quant rows that are not whole super-blocks fall back to q8_0, with a notice") {
    SynthOptions o = options("smollm2-135m", "q4_k", 1, "synth_q4k.gguf");
    std::vector<std::string> notices;
    o.on_notice = [&](const std::string& n) { notices.push_back(n); };
    write_synth_model(o);
    REQUIRE(notices.size() == 1);  // one row length (576) falls back
    CHECK(notices[0].find("q8_0") != std::string::npos);
    CHECK(notices[0].find("576") != std::string::npos);

    auto backend = make_cpu_backend(2);
    auto model = load_model(o.path, *backend);
    CHECK(model->tok_embd->type == DType::Q8_0);            // rows of n_embd = 576
    CHECK(model->layers[0].wq->type == DType::Q8_0);
    CHECK(model->layers[0].ffn_down->type == DType::Q4_K);  // rows of n_ff = 1536 = 6 * 256
    check_runs(*model);
    std::remove(o.path.c_str());
}

TEST_CASE("equal options give equal bytes whatever the thread count; another seed other weights") {
    SynthOptions a = options("smollm2-135m", "q4_1", 1, "synth_det_a.gguf");
    SynthOptions b = options("smollm2-135m", "q4_1", 1, "synth_det_b.gguf");
    SynthOptions c = options("smollm2-135m", "q4_1", 1, "synth_det_c.gguf");
    a.n_threads = 1;
    b.n_threads = 3;
    c.seed = a.seed + 1;
    size_t progress_calls = 0;
    b.on_progress = [&](size_t done, size_t total) {
        ++progress_calls;
        CHECK(done == progress_calls);
        CHECK(total == 11);
    };
    const SynthSummary summary = write_synth_model(a);
    write_synth_model(b);
    write_synth_model(c);
    CHECK(progress_calls == 11);
    const std::string bytes_a = read_bytes(a.path);
    CHECK(bytes_a.size() == summary.file_bytes);
    CHECK(bytes_a == read_bytes(b.path));
    const std::string bytes_c = read_bytes(c.path);
    REQUIRE(bytes_c.size() == bytes_a.size());
    CHECK(bytes_c != bytes_a);
    for (const auto* o : {&a, &b, &c}) std::remove(o->path.c_str());
}

TEST_CASE("bad options are one Error naming the choices") {
    SynthOptions o = options("llama-1b", "q4_0", 1, "synth_never_written.gguf");
    SUBCASE("unknown shape") {
        o.shape = "llama-70b";
        CHECK_THROWS_WITH_AS(write_synth_model(o),
                             "unknown shape 'llama-70b' (shapes: llama-1b, llama-8b, smollm2-135m, qwen2-0.5b, "
                             "deepseek-v2-lite)",
                             Error);
    }
    SUBCASE("unknown type") {
        o.type = "q3_k";
        CHECK_THROWS_WITH_AS(
            write_synth_model(o),
            "unknown type 'q3_k' (types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)", Error);
    }
    SUBCASE("a KV head count or latent rank on a shape that has MLA already") {
        o.shape = "deepseek-v2-lite";
        o.kv_lora_rank = 256;
        CHECK_THROWS_WITH_AS(write_synth_model(o),
                             "shape 'deepseek-v2-lite' has MLA attention already: no KV head count or latent rank", Error);
        o.kv_lora_rank = 0;
        o.n_head_kv = 4;
        CHECK_THROWS_AS(write_synth_model(o), Error);
    }
    SUBCASE("too many layers") {
        o.n_layer = 5000;
        CHECK_THROWS_AS(write_synth_model(o), Error);
    }
    SUBCASE("a directory that does not exist") {
        o.path = "/nonexistent/dir/model.gguf";
        CHECK_THROWS_AS(write_synth_model(o), Error);
    }
    std::ifstream never(o.path);
    CHECK(!never.good());
}
