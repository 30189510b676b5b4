// Whole tiny models on the CUDA backend against the CPU backend: the same GGUF file, f32 or with its
// matrices quantized to one type, loaded on both; logits compared after decode steps and prefills.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"
#include "cuda/cuda_backend.h"
#include "golden.h"
#include "model_fixture.h"
#include "models/model.h"
#include "models/session.h"

using namespace mf;
using mf_test::max_rel_diff;
using mf_test::random_tokens;

namespace {

// Rewrites the GGUF file src as dst with every matrix (a 2-D f32 tensor: the embedding, the output
// and every projection) stored as type, through the dtype table's from_float; norm weights and
// biases stay f32, as real files keep them.
void quantize_gguf(const std::string& src, const std::string& dst, DType type) {
    REQUIRE(src != dst);  // src is mapped while dst is written
    const GGUFFile in = GGUFFile::open(src);
    GGUFWriter out;
    for (size_t i = 0; i < in.n_kv(); ++i) out.set(std::string(in.kv(i).key()), GGUFMetaValue::copy_of(in.kv(i)));
    const DTypeTraits& tr = dtype_traits(type);
    std::vector<std::vector<uint8_t>> converted;  // the writer reads these during write()
    converted.reserve(in.n_tensors());
    for (size_t i = 0; i < in.n_tensors(); ++i) {
        const GGUFTensorInfo& t = in.tensor(i);
        if (t.n_dims != 2 || t.type != DType::F32 || type == DType::F32) {
            out.add_tensor(t.name, t.type, t.n_dims, t.ne, t.data);
            continue;
        }
        REQUIRE_MESSAGE(t.ne[0] % tr.block_size == 0, t.name, " rows are not whole blocks of ", dtype_name(type));
        const size_t row_size = dtype_row_size(type, t.ne[0]);
        converted.emplace_back(row_size * size_t(t.ne[1]));
        const float* rows = static_cast<const float*>(t.data);
        for (int64_t r = 0; r < t.ne[1]; ++r)
            tr.from_float(rows + r * t.ne[0], converted.back().data() + size_t(r) * row_size, t.ne[0]);
        out.add_tensor(t.name, type, t.n_dims, t.ne, converted.back().data());
    }
    out.write(dst);
}



Backend& gpu() {
    static std::unique_ptr<Backend> b = make_cuda_backend();
    return *b;
}

}  // namespace

// Tolerances, on max |logit difference| / max |logit|. F32/F16 weights: the backends sum in different
// orders (~1e-6), and now and then a K or V value lands on the other side of an f16 rounding boundary
// in the cache, which moves the logits by ~1e-5; 1e-3 leaves room for several. Quantized weights:
// every matmul requantizes its activations, and an input that differs in its last bit between the
// backends now and then rounds one activation quant the other way. Attention in these random models
// amplifies such a one-step change to 1-6% of the largest logit (the CPU's own logits move that much
// when one of its norm weights changes by an ulp), while most steps agree to ~1e-7. 0.1 allows such a
// step and still fails on a wrong kernel, view or dispatch, which changes the logits by O(1).
TEST_CASE("tiny llama and qwen2 on CUDA match the CPU for every weight type, decode and prefill alike") {
    struct Case {
        DType type;
        const char* arch;
        uint32_t n_head_kv;  // 4: MHA, 2: GQA, 1: MQA (n_head = 4)
    };
    const Case cases[] = {
        {DType::F32, "llama", 2},  {DType::F32, "qwen2", 1},  {DType::F16, "llama", 4},  {DType::Q8_0, "llama", 2},
        {DType::Q4_0, "llama", 2}, {DType::Q4_0, "qwen2", 4}, {DType::Q4_1, "llama", 1}, {DType::Q5_0, "qwen2", 2},
        {DType::Q5_1, "llama", 2}, {DType::Q4_K, "llama", 2}, {DType::Q4_K, "qwen2", 1}, {DType::Q5_K, "llama", 4},
        {DType::Q6_K, "llama", 2}, {DType::Q6_K, "qwen2", 2},
    };
    for (const Case& c : cases) {
        const std::string type_name = dtype_name(c.type), arch = c.arch;
        CAPTURE(type_name);
        CAPTURE(arch);
        CAPTURE(c.n_head_kv);
        const bool quantized = dtype_traits(c.type).is_quantized;
        const double tol = quantized ? 0.1 : 1e-3;

        // K-quant rows are 256-element super-blocks: every matrix's row length is a multiple of 256.
        mf_test::TinyLlama tiny;
        tiny.arch = arch;
        tiny.n_embd = 256;
        tiny.n_ff = 512;
        tiny.n_head = 4;
        tiny.n_head_kv = c.n_head_kv;
        const std::string f32_path = mf_test::temp_path(arch + "_gpu_source.gguf");
        const std::string path = mf_test::temp_path(arch + "_gpu_" + type_name + ".gguf");
        tiny.write(f32_path);
        quantize_gguf(f32_path, path, c.type);

        auto cpu = make_cpu_backend(2);
        auto cpu_model = load_model(path, *cpu);
        auto gpu_model = load_model(path, gpu());
        REQUIRE(gpu_model->tok_embd->type == c.type);
        const std::vector<int32_t> tokens = random_tokens(9, int32_t(tiny.n_vocab));

        // Token by token: every step's logits (the KV cache read back through f16 views each step).
        double worst = 0;
        {
            Session sc(*cpu_model, SessionParams{64, 256});
            Session sg(*gpu_model, SessionParams{64, 256});
            for (size_t i = 0; i < tokens.size(); ++i) {
                CAPTURE(i);
                const std::vector<float> want = i == 0 ? sc.prefill({tokens[0]}) : sc.decode(tokens[i]);
                const std::vector<float>& got = i == 0 ? sg.prefill({tokens[0]}) : sg.decode(tokens[i]);
                const double diff = max_rel_diff(got, want);
                worst = std::max(worst, diff);
                CHECK(diff <= tol);
            }
        }
        // One 9-token prefill (N = 9 columns in every matmul), and the same prefill in chunks of 4,
        // so later chunks attend to cached positions written by earlier graphs.
        for (uint32_t n_batch : {256u, 4u}) {
            CAPTURE(n_batch);
            Session sc(*cpu_model, SessionParams{64, n_batch});
            Session sg(*gpu_model, SessionParams{64, n_batch});
            const std::vector<float> want = sc.prefill(tokens);
            const double diff = max_rel_diff(sg.prefill(tokens), want);
            worst = std::max(worst, diff);
            CHECK(diff <= tol);
            CHECK(sg.n_past() == tokens.size());
        }
        MESSAGE(type_name, " ", arch, " n_head_kv=", c.n_head_kv, ": max relative logit difference ", worst);
        std::remove(f32_path.c_str());
        std::remove(path.c_str());
    }
}

// SmolLM2-135M Q4_1 (`make model`; carried to the GPU machine when run there), on the prompts of
// the llama.cpp golden file. First against llama.cpp, as test_model checks the CPU (tests/golden.h's
// margins). Then against the CPU backend: greedy decoding runs free on each for 32 tokens and the
// sequences must be equal up to the first step where the CPU's best two logits are within the same
// kSmolLM2ClearMargin (either is then right). Both backends quantize the activations to 8 bits and
// sum in different orders; on a real model a rounding step that goes the other way in one layer
// reaches the logits, as it does between llama.cpp and the CPU backend (up to 0.6 at the chosen
// token). Measured on the H200 (2026-12-03): GPU against llama.cpp 188 of 192 choices, 0.74 at the
// chosen logit (the CPU: 188, 0.59); GPU against CPU up to 7.0% of the largest logit over the whole
// vocabulary, and 3 of 6 free runs parted at CPU margins of 0.23 and less. The bound is 10%; a wrong
// kernel puts the logits far outside it and fails the golden check.
TEST_CASE("SmolLM2-135M on CUDA: llama.cpp's golden choices; 32 free-running greedy tokens as the CPU's to a near tie") {
    const std::string path = mf_test::smollm2_path();
    if (!std::ifstream(path).good()) {
        MESSAGE("skipped: missing ", path, " (run `make model`)");
        return;
    }
    constexpr double kMaxRelLogitDiff = 0.1;
    auto cpu = make_cpu_backend(0);
    auto cpu_model = load_model(path, *cpu);
    auto gpu_model = load_model(path, gpu());
    const auto cases = mf_test::read_golden(mf_test::source_path("tests/fixtures/golden/smollm2_greedy.txt"));
    REQUIRE(!cases.empty());
    mf_test::GoldenStats st;
    for (const auto& c : cases) {
        mf_test::check_golden_case(*gpu_model, c, SessionParams{512, 256}, mf_test::kSmolLM2ClearMargin,
                                   mf_test::kSmolLM2LogitTolerance, st);
    }
    MESSAGE("GPU: greedy choices equal to llama.cpp's: ", st.same, " of ", st.steps, "; largest |logit - llama.cpp's| ",
            "of its choice: ", st.worst_logit);
    CHECK(double(st.same) >= 0.95 * double(st.steps));
    size_t compared = 0, cut_by_tie = 0;
    double worst = 0;
    float widest_cut = 0;  // the CPU's largest top-2 margin where the runs parted
    for (const auto& c : cases) {
        CAPTURE(c.text);
        Session sc(*cpu_model, SessionParams{512, 256});
        Session sg(*gpu_model, SessionParams{512, 256});
        const std::vector<float>* want = &sc.prefill(c.prompt);
        const std::vector<float>* got = &sg.prefill(c.prompt);
        for (int i = 0; i < 32; ++i) {
            CAPTURE(i);
            const double diff = max_rel_diff(*got, *want);
            worst = std::max(worst, diff);
            CHECK(diff <= kMaxRelLogitDiff);
            std::vector<float> top2 = *want;
            std::partial_sort(top2.begin(), top2.begin() + 2, top2.end(), std::greater<float>());
            const int32_t tc = int32_t(std::max_element(want->begin(), want->end()) - want->begin());
            const int32_t tg = int32_t(std::max_element(got->begin(), got->end()) - got->begin());
            if (tg != tc) {
                if (top2[0] - top2[1] < mf_test::kSmolLM2ClearMargin) {
                    ++cut_by_tie;
                    widest_cut = std::max(widest_cut, top2[0] - top2[1]);
                } else {
                    FAIL_CHECK("the GPU chose token ", tg, ", the CPU ", tc, " by a margin of ", top2[0] - top2[1]);
                }
                break;  // the two runs continue from different tokens
            }
            ++compared;
            want = &sc.decode(tc);
            got = &sg.decode(tg);
        }
    }
    MESSAGE("greedy tokens compared: ", compared, " (", cases.size(), " prompts, ", cut_by_tie,
            " parted at a near tie, CPU margin at most ", widest_cut, "); max relative logit difference ", worst);
}
