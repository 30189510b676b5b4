// The three attention backends (--attn naive|fused|flash) on CUDA against the CPU (the reference):
// the same random q, cache and mask through each backend's graph, ATTN_FUSED's span limit, sessions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/graph.h"
#include "core/ops.h"
#include "cuda/cuda_backend.h"
#include "model_fixture.h"
#include "models/builders.h"
#include "models/model.h"
#include "models/session.h"
#include "row_codec.h"
#include "test_util.h"

using namespace mf;
using mf_test::encode;
using mf_test::max_rel_diff;
using mf_test::random_floats;

namespace {

const AttnImpl kImpls[] = {AttnImpl::NAIVE, AttnImpl::FUSED, AttnImpl::FLASH};

Backend& cpu() {
    static std::unique_ptr<Backend> b = make_cpu_backend(2);
    return *b;
}
Backend& gpu() {
    static std::unique_ptr<Backend> b = make_cuda_backend();
    return *b;
}

struct Shape {
    int64_t hd, n_head, n_head_kv, T, n_kv;
    int64_t hdv = 0;  // 0: hd; else MLA: V is the first hdv values of each K row (one KV head)
};

struct Inputs {
    std::vector<float> q, k, v, mask;
};

// Causal-free random holes; with T > 1 the last token sees nothing (zeros from every backend).
Inputs make_inputs(const Shape& sh, int64_t slots) {
    const int64_t hdv = sh.hdv ? sh.hdv : sh.hd;
    Inputs in;
    in.q = random_floats(size_t(sh.hd * sh.n_head * sh.T), -2.0f, 2.0f);
    in.k = random_floats(size_t(sh.hd * sh.n_head_kv * slots), -2.0f, 2.0f);
    in.v = random_floats(size_t(hdv * sh.n_head_kv * slots));
    in.mask.resize(size_t(sh.n_kv * sh.T));
    std::uniform_int_distribution<int> coin(0, 4);
    for (int64_t t = 0; t < sh.T; ++t)
        for (int64_t j = 0; j < sh.n_kv; ++j)
            in.mask[size_t(t * sh.n_kv + j)] = coin(mf_test::rng()) || j == 0 ? 0.0f : -INFINITY;
    if (sh.T > 1)
        for (int64_t j = 0; j < sh.n_kv; ++j) in.mask[size_t((sh.T - 1) * sh.n_kv + j)] = -INFINITY;
    return in;
}

// impl's attention graph (build_attn_core) over cache views of types tk/tv, run on be.
std::vector<float> run_impl(Backend& be, AttnImpl impl, const Shape& sh, DType tk, DType tv, const Inputs& in,
                            int64_t slots) {
    const bool mla = sh.hdv != 0;
    const int64_t hdv = mla ? sh.hdv : sh.hd;
    Context ctx;
    Tensor* q = ctx.new_tensor_3d(DType::F32, sh.hd, sh.n_head, sh.T);
    Tensor* mask = ctx.new_tensor_2d(DType::F32, sh.n_kv, sh.T);
    Tensor* kc = ctx.new_tensor_2d(tk, sh.hd * sh.n_head_kv, slots);
    Tensor* vc = mla ? nullptr : ctx.new_tensor_2d(tv, hdv * sh.n_head_kv, slots);
    for (Tensor* t : {q, mask, kc, vc})
        if (t) t->flags |= TENSOR_INPUT;
    Tensor* K = view_3d(ctx, kc, sh.hd, sh.n_kv, sh.n_head_kv, kc->nb[1], dtype_row_size(tk, sh.hd), 0);
    Tensor* V = mla ? view_3d(ctx, kc, hdv, sh.n_kv, 1, kc->nb[1], kc->nb[1] * slots, 0)
                    : view_3d(ctx, vc, hdv, sh.n_kv, sh.n_head_kv, vc->nb[1], dtype_row_size(tv, hdv), 0);
    Tensor* out = build_attn_core(ctx, impl, q, K, V, mask, 1.0f / std::sqrt(float(sh.hd)));
    Graph g = build_graph({out});
    auto arena = allocate_graph(be, g);
    tensor_set(q, in.q.data());
    tensor_set(mask, in.mask.data());
    tensor_set(kc, encode(tk, in.k, sh.hd * sh.n_head_kv).data());
    if (vc) tensor_set(vc, encode(tv, in.v, hdv * sh.n_head_kv).data());
    compute_graph(be, g);
    std::vector<float> got(size_t(out->nelements()));
    tensor_get(out, got.data());
    return got;
}

}  // namespace

// fused and flash read the same dequantized values on both backends and differ in summation order
// and exp (__expf, ~2 ulp): 1e-4 relative, as test_gpu_attention. naive's scores go through mul_mat,
// which on a q8_0/q4_0 cache rounds q to 8 bits on each backend in its own way (CPU q8_0 blocks, CUDA
// its activation quantization), ~1% each (test_attn_backends): 3e-2 between them; on f16 1e-4.
TEST_CASE("naive, fused and flash on CUDA match the CPU for cache types, head sizes, groups and MLA") {
    const DType types[] = {DType::F16, DType::Q8_0, DType::Q4_0};
    const Shape shapes[] = {
        {64, 8, 8, 1, 37},          // MHA decode
        {128, 32, 8, 1, 2000},      // 8B-shaped decode at depth (flash splits; fused: one block per group)
        {64, 9, 3, 5, 300},         // SmolLM2-shaped GQA, a batch of 5
        {128, 12, 1, 3, 700},       // MQA with a group larger than a fused block serves (8)
        {64, 8, 2, 17, 64},         // prefill-like
        {128, 8, 4, 1, 12000},      // a span whose fused scores need the opted-in shared memory
        {576, 16, 1, 2, 300, 512},  // DeepSeek-V2-Lite MLA latent rows
        {40, 4, 1, 4, 30, 32},      // the MLA test fixtures' latent (32 + 8 rope dims)
    };
    for (const Shape& sh : shapes)
        for (DType tk : types)
            for (DType tv : types) {
                const bool mla = sh.hdv != 0;
                if (mla && (tv != tk || (tk != DType::F16 && sh.hd % 32 != 0))) continue;  // V is K's rows
                const int64_t slots = sh.n_kv + 5;
                const Inputs in = make_inputs(sh, slots);
                const int64_t hdv = mla ? sh.hdv : sh.hd;
                for (AttnImpl impl : kImpls) {
                    const std::string name = attn_impl_name(impl), type_k = dtype_name(tk), type_v = dtype_name(tv);
                    CAPTURE(name);
                    CAPTURE(type_k);
                    CAPTURE(type_v);
                    CAPTURE(sh.hd);
                    CAPTURE(sh.n_head_kv);
                    CAPTURE(sh.n_kv);
                    CAPTURE(sh.T);
                    const std::vector<float> want = run_impl(cpu(), impl, sh, tk, tv, in, slots);
                    const std::vector<float> got = run_impl(gpu(), impl, sh, tk, tv, in, slots);
                    REQUIRE(got.size() == want.size());
                    const std::vector<double> want_d(want.begin(), want.end());
                    const bool q_rounded = impl == AttnImpl::NAIVE && tk != DType::F16;
                    CHECK(mf_test::rel_error(got.data(), want_d.data(), want.size()) < (q_rounded ? 3e-2 : 1e-4));
                    if (sh.T > 1) {
                        bool zeros = true;
                        for (size_t i = got.size() - size_t(hdv * sh.n_head); i < got.size(); ++i)
                            zeros &= got[i] == 0.0f;
                        CHECK(zeros);
                    }
                }
            }
}

// ATTN_FUSED keeps one query head's scores of the whole span in a block's shared memory (at most
// ~227 KB on Hopper, ~56K positions at head size 128): longer spans are refused by supports_op, so a
// graph asking for one fails before anything runs, rather than being silently chunked.
TEST_CASE("ATTN_FUSED's span limit on CUDA: refused past shared memory, accepted below") {
    for (int64_t n_kv : {int64_t(4096), int64_t(200000)}) {
        CAPTURE(n_kv);
        Context ctx;
        Tensor* q = ctx.new_tensor_3d(DType::F32, 128, 8, 1);
        Tensor* kc = ctx.new_tensor_2d(DType::F16, 128 * 2, n_kv);
        Tensor* mask = ctx.new_tensor_2d(DType::F32, n_kv, 1);
        Tensor* K = view_3d(ctx, kc, 128, n_kv, 2, kc->nb[1], 256, 0);
        Tensor* node = attn_fused(ctx, q, K, K, mask, 0.1f);
        CHECK(gpu().supports_op(node) == (n_kv == 4096));
        CHECK(gpu().supports_op(flash_attn(ctx, q, K, K, mask, 0.1f)));  // flash has no such limit
    }
}

// Whole sessions of the tiny random model on both backends with each --attn. Tolerances as in
// test_gpu_attention's sessions: 1e-3 of the largest logit on f16; a quantized cache can round one
// K/V value the other way when the backends differ in the last bit, which these random models
// amplify to a few percent, so 0.1 (still far below what a wrong kernel gives).
TEST_CASE("sessions with each --attn on CUDA match the CPU: f16, q8_0 and a windowed cache") {
    mf_test::TinyLlama tiny;
    tiny.n_embd = 256;
    tiny.n_ff = 512;
    const std::string path = mf_test::temp_path("gpu_attn_backends.gguf");
    tiny.write(path);
    auto cpu_model = load_model(path, cpu());
    auto gpu_model = load_model(path, gpu());
    struct Case {
        const char* type;
        int64_t window, sinks;
        double tol;
    };
    const Case cases[] = {{"f16", -1, -1, 1e-3}, {"q8_0", -1, -1, 0.1}, {"f16", 6, 2, 1e-3}};
    const std::vector<int32_t> tokens = mf_test::random_tokens(30, int32_t(tiny.n_vocab));
    for (const Case& c : cases)
        for (AttnImpl impl : kImpls) {
            const std::string name = attn_impl_name(impl), type = c.type;
            CAPTURE(name);
            CAPTURE(type);
            CAPTURE(c.window);
            SessionParams p;
            p.n_ctx = 32;
            p.n_batch = 4;
            p.kv = KVOverrides{c.type, c.type, c.window, c.sinks};
            p.attn = impl;
            Session sc(*cpu_model, p);
            Session sg(*gpu_model, p);
            const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 10);
            CHECK(max_rel_diff(sg.prefill(prompt), sc.prefill(prompt)) < c.tol);
            for (size_t i = 10; i < tokens.size(); ++i) {
                CAPTURE(i);
                CHECK(max_rel_diff(sg.decode(tokens[i]), sc.decode(tokens[i])) < c.tol);
            }
        }
    std::remove(path.c_str());
}
