// The gemma3 forward pass on the CUDA backend against the CPU backend: a tiny random Gemma 3 whose
// local layers' windows wrap their rings, f16 and quantized caches, and Gemma 3 270M when present.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "gemma3_fixture.h"
#include "models/model.h"
#include "models/session.h"

using namespace mf;
using mf_test::max_rel_diff;
using mf_test::random_tokens;

namespace {



Backend& gpu() {
    static std::unique_ptr<Backend> b = make_cuda_backend();
    return *b;
}

SessionParams params(uint32_t n_batch, const std::string& cache_type) {
    SessionParams p{64, n_batch};
    p.kv.type_k = p.kv.type_v = cache_type;
    return p;
}

}  // namespace

// f32 weights: the backends sum in different orders (~1e-6), and now and then a cached K or V value
// lands on the other side of an f16 rounding boundary, which moves the logits by ~1e-5, or of a q8_0
// one: a whole quant step (1/127 of the block's largest value), seen to move them by 1.08e-3 (seed
// 3962424991, the same with and without overlapped launches). 1e-3 (f16) and 4e-3 (q8_0) leave
// room for that and still fail on a wrong kernel, view or dispatch (O(1)).
TEST_CASE("tiny gemma3 on CUDA matches the CPU: decode past the window, prefill, chunked prefill") {
    for (const std::string cache_type : {"f16", "q8_0"}) {
        CAPTURE(cache_type);  // a std::string: doctest prints a const char* as its address
        const double bound = cache_type == "f16" ? 1e-3 : 4e-3;
        mf_test::TinyGemma3 tiny;
        tiny.head_dim = 32;  // q8_0 rows are blocks of 32
        tiny.rope_scale_factor = 4.0f;
        const std::string path = mf_test::temp_path("gemma3_gpu.gguf");
        tiny.write(path);
        auto cpu = make_cpu_backend(2);
        auto cpu_model = load_model(path, *cpu);
        auto gpu_model = load_model(path, gpu());
        const std::vector<int32_t> tokens = random_tokens(21, int32_t(tiny.n_vocab));

        double worst = 0;
        {
            // n_batch 1: the local layers' rings hold 6 rows and wrap three times.
            Session sc(*cpu_model, params(1, cache_type));
            Session sg(*gpu_model, params(1, cache_type));
            for (size_t i = 0; i < tokens.size(); ++i) {
                CAPTURE(i);
                const std::vector<float> want = i == 0 ? sc.prefill({tokens[0]}) : sc.decode(tokens[i]);
                const double diff = max_rel_diff(i == 0 ? sg.prefill({tokens[0]}) : sg.decode(tokens[i]), want);
                worst = std::max(worst, diff);
                CHECK(diff <= bound);
            }
        }
        for (uint32_t n_batch : {256u, 4u}) {
            CAPTURE(n_batch);
            Session sc(*cpu_model, params(n_batch, cache_type));
            Session sg(*gpu_model, params(n_batch, cache_type));
            const std::vector<float> want = sc.prefill(tokens);
            const double diff = max_rel_diff(sg.prefill(tokens), want);
            worst = std::max(worst, diff);
            CHECK(diff <= bound);
        }
        MESSAGE(cache_type, " cache: max relative logit difference ", worst);
        std::remove(path.c_str());
    }
}

// Q4_K/Q5_0/Q6_K/Q8_0 weights: every matmul requantizes its activations, and an input that differs in
// its last bit between the backends now and then rounds one activation quant the other way (see
// test_gpu_model); greedy tokens still agree wherever the CPU's top-1 leads by a clear margin.
TEST_CASE("Gemma 3 270M on CUDA: greedy tokens equal the CPU's past the sliding window") {
    const std::string path = mf_test::gemma3_path();
    if (!std::ifstream(path).good()) {
        MESSAGE("skipped: missing ", path, " (run `make model MODEL=gemma3`)");
        return;
    }
    auto cpu = make_cpu_backend(0);
    auto cpu_model = load_model(path, *cpu);
    auto gpu_model = load_model(path, gpu());
    const std::vector<int32_t> prompt = random_tokens(600, 1000);  // past the 512-token window
    Session sc(*cpu_model, SessionParams{1024, 256});
    Session sg(*gpu_model, SessionParams{1024, 256});
    const std::vector<float>* want = &sc.prefill(prompt);
    const std::vector<float>* got = &sg.prefill(prompt);
    for (int i = 0; i < 16; ++i) {
        CAPTURE(i);
        std::vector<float> sorted = *want;
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
        const int32_t tc = int32_t(std::max_element(want->begin(), want->end()) - want->begin());
        const int32_t tg = int32_t(std::max_element(got->begin(), got->end()) - got->begin());
        if (sorted[0] - sorted[1] > 0.5f) CHECK(tg == tc);
        want = &sc.decode(tc);
        got = &sg.decode(tc);
    }
}
