// deepseek2 (MLA + MoE) on the CUDA backend: the tiny transformers fixtures converted and run on the
// GPU against transformers' logits (as test_deepseek2 does on the CPU) and against the CPU backend.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "core/cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "deepseek2_fixture.h"

using namespace mf;
using namespace mf_test::ds2;
using mf_test::max_rel_diff;
using mf_test::session64;

namespace {

Backend& gpu() {
    static std::unique_ptr<Backend> b = make_cuda_backend();
    return *b;
}

// Against transformers: the CPU suite's bound (its f16 latent cache moves these models' logits by up
// to 1.3e-3). GPU against CPU: the same f16 cache and f32 weights, only summation order differs
// (~1e-6), plus the odd cached value on the other side of an f16 rounding step (~1e-5).
constexpr double kVsTransformers = 4e-3;
constexpr double kVsCpu = 1e-3;

}  // namespace

TEST_CASE("deepseek2 fixtures on CUDA: decode and prefill match transformers and the CPU, greedy exactly") {
    for (const std::string name : {"deepseek2_dense", "deepseek2_moe"}) {
        CAPTURE(name);
        const Expected e = read_expected(name);
        const std::string path = convert(name, DType::F32);
        auto cpu = make_cpu_backend(2);
        auto cpu_model = load_model(path, *cpu);
        auto gpu_model = load_model(path, gpu());

        const auto want_cpu = decode_each(*cpu_model, e.ids);
        const auto got = decode_each(*gpu_model, e.ids);
        double worst = 0, worst_cpu = 0;
        for (size_t i = 0; i < e.ids.size(); ++i) {
            CAPTURE(i);
            const double d = max_rel_diff(got[i], e.logits[i]);
            const double dc = max_rel_diff(got[i], want_cpu[i]);
            worst = std::max(worst, d);
            worst_cpu = std::max(worst_cpu, dc);
            CHECK(d < kVsTransformers);
            CHECK(dc < kVsCpu);
        }
        const auto batched = prefill_each(*gpu_model, e.ids);
        for (size_t i = 0; i < e.ids.size(); ++i) {
            CAPTURE(i);
            CHECK(max_rel_diff(batched[i],
                               e.logits[i]) < kVsTransformers);
        }
        // transformers' top-1 beats its runner-up by >= 0.077 at every step (the fixtures' margins),
        // ~10x the f16-latent logit error.
        const std::vector<int32_t> greedy = greedy_after(*gpu_model, e.ids, e.greedy.size());
        CHECK(greedy == e.greedy);
        MESSAGE(name, " on CUDA: worst max-relative error vs transformers ", worst, ", vs the CPU ", worst_cpu);

        // --mla-expanded (per-head K/V caches) on both backends: the same bounds.
        SessionParams expanded = session64();
        expanded.kv.mla_expanded = true;
        const auto want_x = decode_each(*cpu_model, e.ids, expanded);
        const auto got_x = decode_each(*gpu_model, e.ids, expanded);
        const auto batched_x = prefill_each(*gpu_model, e.ids, expanded);
        for (size_t i = 0; i < e.ids.size(); ++i) {
            CAPTURE(i);
            CHECK(max_rel_diff(got_x[i], e.logits[i]) < kVsTransformers);
            CHECK(max_rel_diff(batched_x[i], e.logits[i]) < kVsTransformers);
            CHECK(max_rel_diff(got_x[i], want_x[i]) < kVsCpu);
        }
        std::remove(path.c_str());
    }
}

// A quantized latent (c_kv in q8_0 / q4_0, the rope part apart in f16) on CUDA against the CPU's. The
// stores quantize as the CPU does (byte for byte, test_gpu_attention), but c_kv itself differs in
// summation order, and a value on the other side of a quantization step moves the logits by far more
// than an f16 step: the bound is the quantized llama sessions' (test_gpu_attention), 0.1. (A tail read
// as zeros moves these logits by 1.2-1.6, measured on the CPU.)
TEST_CASE("deepseek2 fixtures on CUDA with a q8_0 / q4_0 latent cache match the CPU") {
    for (const std::string name : {"deepseek2_dense", "deepseek2_moe"}) {
        CAPTURE(name);
        const Expected e = read_expected(name);
        const std::string path = convert(name, DType::F32);
        auto cpu = make_cpu_backend(2);
        auto cpu_model = load_model(path, *cpu);
        auto gpu_model = load_model(path, gpu());
        for (const char* type : {"q8_0", "q4_0"}) {
            CAPTURE(type);
            SessionParams sp = session64();
            sp.kv.type_k = type;
            const auto want = decode_each(*cpu_model, e.ids, sp);
            // --attn fused and naive on CUDA (the fused kernel's tail; naive's f32 join) against the
            // CPU's flash: the same cached bytes, so the sessions' bound.
            for (AttnImpl impl : {AttnImpl::FUSED, AttnImpl::NAIVE}) {
                CAPTURE(attn_impl_name(impl));
                SessionParams other = sp;
                other.attn = impl;
                const auto got_other = decode_each(*gpu_model, e.ids, other);
                for (size_t i = 0; i < e.ids.size(); ++i) CHECK(max_rel_diff(got_other[i], want[i]) < 0.1);
            }
            const auto got = decode_each(*gpu_model, e.ids, sp);
            const auto batched = prefill_each(*gpu_model, e.ids, sp);
            const auto batched_cpu = prefill_each(*cpu_model, e.ids, sp);
            double worst = 0;
            for (size_t i = 0; i < e.ids.size(); ++i) {
                CAPTURE(i);
                worst = std::max({worst, max_rel_diff(got[i], want[i]), max_rel_diff(batched[i], batched_cpu[i])});
                CHECK(max_rel_diff(got[i], want[i]) < 0.1);
                CHECK(max_rel_diff(batched[i], batched_cpu[i]) < 0.1);
            }
            MESSAGE(name, " ", std::string(type), " latent on CUDA: worst max-relative difference from the CPU ", worst);
        }
        std::remove(path.c_str());
    }
}
