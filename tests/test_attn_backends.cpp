// The three attention backends (--attn naive|fused|flash) on the CPU: the same random q, cache and
// mask through each agree with a double reference and with each other; whole sessions agree too.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/graph.h"
#include "core/ops.h"
#include "model_fixture.h"
#include "models/builders.h"
#include "models/convert.h"
#include "models/model.h"
#include "models/session.h"
#include "row_codec.h"
#include "test_util.h"

using namespace mf;
using mf_test::decode;
using mf_test::encode;
using mf_test::max_rel_diff;
using mf_test::random_floats;
using mf_test::rel_error;

namespace {

const AttnImpl kImpls[] = {AttnImpl::NAIVE, AttnImpl::FUSED, AttnImpl::FLASH};

// One attention problem as the KV cache lays it out: rows per position, KV heads side by side.
struct Problem {
    DType type_k, type_v;
    int64_t hd, n_head, n_head_kv, T, n_kv;
    std::vector<float> q, k, v, mask;  // q [hd, n_head, T]; k, v [hd * n_head_kv, n_slots]; mask [n_kv, T]
    int64_t n_slots() const { return n_kv + 3; }  // the cache is longer than the span attention reads
};

// Causal over the last T positions with random holes (windows and rings leave such gaps); with
// T > 1 the last token sees nothing at all, so every backend must give it zeros, not NaN.
Problem make_problem(DType tk, DType tv, int64_t hd, int64_t n_head, int64_t n_head_kv, int64_t T, int64_t n_kv) {
    Problem p{tk, tv, hd, n_head, n_head_kv, T, n_kv, {}, {}, {}, {}};
    p.q = random_floats(size_t(hd * n_head * T), -2.0f, 2.0f);
    p.k = random_floats(size_t(hd * n_head_kv * p.n_slots()), -2.0f, 2.0f);
    p.v = random_floats(size_t(hd * n_head_kv * p.n_slots()));
    p.mask.resize(size_t(n_kv * T));
    std::uniform_int_distribution<int> coin(0, 4);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < n_kv; ++j) {
            const bool visible = j <= n_kv - T + t && (coin(mf_test::rng()) != 0 || j == 0);
            p.mask[size_t(t * n_kv + j)] = visible ? 0.0f : -INFINITY;
        }
    if (T > 1)
        for (int64_t j = 0; j < n_kv; ++j) p.mask[size_t((T - 1) * n_kv + j)] = -INFINITY;
    return p;
}

// Runs the problem through impl's graph (build_attn_core, what build_attn records) on the CPU.
std::vector<float> run_impl(Backend& be, const Problem& p, AttnImpl impl) {
    Context ctx;
    Tensor* q = ctx.new_tensor_3d(DType::F32, p.hd, p.n_head, p.T);
    Tensor* kc = ctx.new_tensor_2d(p.type_k, p.hd * p.n_head_kv, p.n_slots());
    Tensor* vc = ctx.new_tensor_2d(p.type_v, p.hd * p.n_head_kv, p.n_slots());
    Tensor* mask = ctx.new_tensor_2d(DType::F32, p.n_kv, p.T);
    for (Tensor* t : {q, kc, vc, mask}) t->flags |= TENSOR_INPUT;
    Tensor* K = view_3d(ctx, kc, p.hd, p.n_kv, p.n_head_kv, kc->nb[1], dtype_row_size(p.type_k, p.hd), 0);
    Tensor* V = view_3d(ctx, vc, p.hd, p.n_kv, p.n_head_kv, vc->nb[1], dtype_row_size(p.type_v, p.hd), 0);
    Tensor* out = build_attn_core(ctx, impl, q, K, V, mask, 1.0f / std::sqrt(float(p.hd)));
    REQUIRE(out->ne[0] == p.hd);
    REQUIRE(out->ne[1] == p.n_head);
    REQUIRE(out->ne[2] == p.T);
    Graph g = build_graph({out});
    auto arena = allocate_graph(be, g);
    tensor_set(q, p.q.data());
    tensor_set(kc, encode(p.type_k, p.k, p.hd * p.n_head_kv).data());
    tensor_set(vc, encode(p.type_v, p.v, p.hd * p.n_head_kv).data());
    tensor_set(mask, p.mask.data());
    compute_graph(be, g);
    std::vector<float> got(size_t(out->nelements()));
    tensor_get(out, got.data());
    return got;
}

// softmax(K q / sqrt(hd) + mask) V in double over the dequantized cache; zeros for a row that sees nothing.
std::vector<double> reference(const Problem& p) {
    const int64_t w = p.hd * p.n_head_kv, group = p.n_head / p.n_head_kv;
    const std::vector<float> kd = decode(p.type_k, encode(p.type_k, p.k, w), w);
    const std::vector<float> vd = decode(p.type_v, encode(p.type_v, p.v, w), w);
    const double sc = 1.0 / std::sqrt(double(float(p.hd)));
    std::vector<double> out(size_t(p.hd * p.n_head * p.T), 0.0);
    for (int64_t t = 0; t < p.T; ++t)
        for (int64_t h = 0; h < p.n_head; ++h) {
            const int64_t hk = h / group;
            std::vector<double> s(size_t(p.n_kv));
            double mx = -INFINITY;
            for (int64_t j = 0; j < p.n_kv; ++j) {
                double dot = 0;
                for (int64_t i = 0; i < p.hd; ++i)
                    dot += double(p.q[size_t(i + p.hd * (h + p.n_head * t))]) * kd[size_t(i + p.hd * hk + w * j)];
                s[size_t(j)] = dot * double(float(sc)) + p.mask[size_t(t * p.n_kv + j)];
                mx = std::max(mx, s[size_t(j)]);
            }
            if (mx == -INFINITY) continue;
            double sum = 0;
            for (auto& x : s) sum += (x = std::exp(x - mx));
            for (int64_t i = 0; i < p.hd; ++i) {
                double o = 0;
                for (int64_t j = 0; j < p.n_kv; ++j) o += s[size_t(j)] / sum * vd[size_t(i + p.hd * hk + w * j)];
                out[size_t(i + p.hd * (h + p.n_head * t))] = o;
            }
        }
    return out;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
    std::vector<double> bd(b.begin(), b.end());
    return rel_error(a.data(), bd.data(), bd.size());
}

}  // namespace

TEST_CASE("attn_impl_from_name parses the three names and refuses others") {
    for (AttnImpl impl : kImpls) CHECK(attn_impl_from_name(attn_impl_name(impl)) == impl);
    CHECK_THROWS_AS(attn_impl_from_name("flash2"), Error);
    CHECK(SessionParams{}.attn == AttnImpl::FLASH);
}

// fused and flash read the same dequantized rows in f32 and differ from the double reference only
// in summation order and exp: 1e-5 relative (as test_ops' flash_attn case). naive goes through
// mul_mat, which for a q8_0/q4_0 cache converts q to q8_0 first (vec_dot_type; an f16 cache dots
// with f32 q exactly): 8-bit q moves each score by ~0.4% of |q||k| and the output by up to ~1%
// (measured <= 4e-3 over seeds), so naive gets 2e-2 there and 1e-5 on f16.
TEST_CASE("naive, fused and flash agree on the same inputs: cache types, GQA groups, masks, T, head sizes") {
    auto be = make_cpu_backend(2);
    const DType types[][2] = {{DType::F16, DType::F16}, {DType::Q8_0, DType::Q8_0}, {DType::Q4_0, DType::Q4_0},
                              {DType::Q8_0, DType::F16}, {DType::F16, DType::Q4_0}};
    const int64_t n_head = 8;
    for (const auto& tkv : types)
        for (int64_t hd : {64, 128})
            for (int64_t n_head_kv : {8, 4, 2, 1})  // groups 1, 2, 4 and MQA (8)
                for (int64_t T : {1, 5}) {
                    const std::string type_k = dtype_name(tkv[0]), type_v = dtype_name(tkv[1]);
                    CAPTURE(type_k);
                    CAPTURE(type_v);
                    CAPTURE(hd);
                    CAPTURE(n_head_kv);
                    CAPTURE(T);
                    const Problem p = make_problem(tkv[0], tkv[1], hd, n_head, n_head_kv, T, 77);
                    const std::vector<double> want = reference(p);
                    std::vector<float> got[3];
                    for (int i = 0; i < 3; ++i) {
                        const std::string impl = attn_impl_name(kImpls[i]);
                        CAPTURE(impl);
                        got[i] = run_impl(*be, p, kImpls[i]);
                        const bool q_rounded = kImpls[i] == AttnImpl::NAIVE && tkv[0] != DType::F16;
                        CHECK(rel_error(got[i].data(), want.data(), want.size()) < (q_rounded ? 2e-2 : 1e-5));
                        // The query that sees nothing: exact zeros from every backend.
                        if (T > 1)
                            for (int64_t e = 0; e < hd * n_head; ++e) {
                                const float x = got[i][size_t((T - 1) * hd * n_head + e)];
                                REQUIRE(x == 0.0f);
                            }
                    }
                    CHECK(rel_diff(got[1], got[2]) < 1e-5);  // fused vs flash: the same arithmetic, reordered
                }
}

TEST_CASE("a long span (scores past a few thousand positions) and a one-position span agree too") {
    auto be = make_cpu_backend(2);
    for (int64_t n_kv : {1, 3000}) {
        CAPTURE(n_kv);
        const Problem p = make_problem(DType::F16, DType::F16, 64, 4, 2, n_kv == 1 ? 1 : 3, n_kv);
        const std::vector<double> want = reference(p);
        for (AttnImpl impl : kImpls) {
            const std::string name = attn_impl_name(impl);
            CAPTURE(name);
            const std::vector<float> got = run_impl(*be, p, impl);
            CHECK(rel_error(got.data(), want.data(), want.size()) < 1e-5);
        }
    }
}

// Whole forward passes of the tiny random llama (4 query heads over 2 KV heads, head size 32), by
// prefill chunks of 4 then single decode steps, so every step shape is covered. The backends differ
// by f32 rounding, but a last-bit difference in layer 0 can flip a rounding step of layer 1's stored
// K/V, which the random model amplifies: on f16 caches (steps of 2^-11) measured up to 2.1e-4 of the
// largest logit over seeds 1-12, bound 1e-3; on q8_0 (steps of 1/127 of a block's largest value)
// fused vs flash measured up to 5e-4, bound 3e-3. naive also
// rounds q to 8 bits there (see above), which these random models amplify as they amplify the cache's
// own rounding (test_kv_cache: q8_0 moves logits 1-3%): measured up to 7e-2, bound 0.15. A wrong head,
// row or mask moves logits by O(1); the f16 rows and the case above are the sharp checks.
TEST_CASE("sessions give the same logits with each --attn: f16, q8_0 and a windowed ring cache") {
    mf_test::TinyLlama tiny;
    tiny.n_embd = 128;
    const std::string path = mf_test::temp_path("attn_backends.gguf");
    tiny.write(path);
    auto backend = make_cpu_backend(2);
    auto model = load_model(path, *backend);
    const std::vector<int32_t> toks = mf_test::random_tokens(30, int32_t(tiny.n_vocab));
    struct Setup {
        const char* name;
        KVOverrides kv;
        double fused_bound, naive_bound;
    };
    const Setup setups[] = {
        {"f16", KVOverrides{"f16", "f16", -1, -1}, 1e-3, 1e-3},
        {"q8_0", KVOverrides{"q8_0", "q8_0", -1, -1}, 3e-3, 0.15},
        {"f16 window 6 + 2 sinks", KVOverrides{"f16", "f16", 6, 2}, 1e-3, 1e-3},
    };
    for (const Setup& su : setups) {
        const std::string setup = su.name;
        CAPTURE(setup);
        std::vector<std::vector<float>> logits[3];
        for (int i = 0; i < 3; ++i) {
            SessionParams sp;
            sp.n_ctx = 64;
            sp.n_batch = 4;
            sp.kv = su.kv;
            sp.attn = kImpls[i];
            Session s(*model, sp);
            logits[i].push_back(s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 18)));
            for (size_t t = 18; t < toks.size(); ++t) logits[i].push_back(s.decode(toks[t]));
        }
        for (size_t step = 0; step < logits[2].size(); ++step) {
            CAPTURE(step);
            CHECK(max_rel_diff(logits[1][step], logits[2][step]) < su.fused_bound);
            CHECK(max_rel_diff(logits[0][step], logits[2][step]) < su.naive_bound);
        }
    }
    std::remove(path.c_str());
}

// MLA layers (build_attn_mla) take the same switch: the tiny DeepSeek-V2 fixture (latent rows of
// 32 + 8 rope dims shared by every head) converted to f32 weights, prompt then decode steps, with an
// f16 latent cache and quantized ones (c_kv in q8_0 / q4_0, the rope part apart in f16: naive joins
// the two in f32, fused and flash read them where they are). Measured fused/naive vs flash up to
// ~6e-6 of the largest logit; bound 1e-3 as above.
TEST_CASE("MLA sessions give the same logits with each --attn, the latent in f16, q8_0 and q4_0") {
    ConvertOptions opts;
    opts.hf_dir = mf_test::source_path("tests/fixtures/hf/deepseek2_dense");
    opts.out_path = mf_test::temp_path("attn_backends_ds2.gguf");
    opts.type = DType::F32;
    convert_hf_checkpoint(opts);
    auto backend = make_cpu_backend(2);
    auto model = load_model(opts.out_path, *backend);
    const std::vector<int32_t> toks = mf_test::random_tokens(16, int32_t(model->hp.n_vocab));
    // The last case, a q8_0 latent in a ring (window 5, 2 sinks): its rope rows wrap with c_kv's.
    for (const auto& [type, window] : {std::pair{"f16", -1}, std::pair{"q8_0", -1}, std::pair{"q4_0", -1},
                                       std::pair{"q8_0", 5}}) {
        CAPTURE(type);
        CAPTURE(window);
        std::vector<std::vector<float>> logits[3];
        for (int i = 0; i < 3; ++i) {
            SessionParams sp;
            sp.n_ctx = 64;
            sp.n_batch = 4;
            sp.attn = kImpls[i];
            sp.kv.type_k = type;
            sp.kv.window = window;
            sp.kv.sinks = window > 0 ? 2 : -1;
            Session s(*model, sp);
            CHECK(s.kv_plan().layers[0].rope_apart == (std::string(type) == "f16" ? 0u : 8u));
            logits[i].push_back(s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 10)));
            for (size_t t = 10; t < toks.size(); ++t) logits[i].push_back(s.decode(toks[t]));
        }
        for (size_t step = 0; step < logits[2].size(); ++step) {
            CAPTURE(step);
            CHECK(max_rel_diff(logits[1][step], logits[2][step]) < 1e-3);
            CHECK(max_rel_diff(logits[0][step], logits[2][step]) < 1e-3);
        }
    }
    std::remove(opts.out_path.c_str());
}
