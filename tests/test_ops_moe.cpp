// The mixture-of-experts ops on the CPU backend (MUL_MAT_ID, TOP_K, SUM_ROWS, DIV, SIGMOID) and the
// whole build_ffn_moe layer, each against a double-precision reference written here, on fresh random inputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <numeric>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/graph.h"
#include "core/ops.h"
#include "models/builders.h"
#include "row_codec.h"
#include "test_util.h"

using namespace mf;
using mf_test::decode;
using mf_test::encode;
using mf_test::random_floats;
using mf_test::rel_error;

namespace {

const DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                              DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Leaf tensors with host data and one graph run on a CPU backend.
struct Harness {
    explicit Harness(int n_threads = 3) : backend(make_cpu_backend(n_threads)) {}

    Tensor* leaf(DType type, std::initializer_list<int64_t> shape, std::vector<uint8_t> bytes) {
        int64_t ne[4] = {1, 1, 1, 1};
        int n = 0;
        for (int64_t d : shape) ne[n++] = d;
        Tensor* t = ctx.new_tensor(type, n, ne);
        REQUIRE(bytes.size() == t->nbytes());
        pending[t] = std::move(bytes);
        return t;
    }
    // A leaf of `type` holding `values` converted with from_float (row length = first dim).
    Tensor* typed(DType type, std::initializer_list<int64_t> shape, const std::vector<float>& values) {
        return leaf(type, shape, encode(type, values, *shape.begin()));
    }
    Tensor* f32(std::initializer_list<int64_t> shape, const std::vector<float>& values) {
        return typed(DType::F32, shape, values);
    }
    Tensor* i32(std::initializer_list<int64_t> shape, const std::vector<int32_t>& values) {
        std::vector<uint8_t> bytes(values.size() * 4);
        std::memcpy(bytes.data(), values.data(), bytes.size());
        return leaf(DType::I32, shape, std::move(bytes));
    }

    void compute(Tensor* out) {
        Graph g = build_graph({out});
        std::vector<Tensor*> fresh;
        for (Tensor* t : g.leafs)
            if (!t->data) fresh.push_back(t);
        if (!fresh.empty()) buffers.push_back(allocate_tensors(*backend, fresh));
        for (Tensor* t : fresh) {
            auto it = pending.find(t);
            REQUIRE(it != pending.end());
            tensor_set(t, it->second.data());
        }
        buffers.push_back(allocate_graph(*backend, g));
        compute_graph(*backend, g);
    }
    std::vector<float> run_f32(Tensor* out) {
        compute(out);
        REQUIRE(out->type == DType::F32);
        std::vector<float> v(size_t(out->nelements()));
        tensor_get(out, v.data());
        return v;
    }
    std::vector<int32_t> run_i32(Tensor* out) {
        compute(out);
        REQUIRE(out->type == DType::I32);
        std::vector<int32_t> v(size_t(out->nelements()));
        tensor_get(out, v.data());
        return v;
    }

    Context ctx;
    std::unique_ptr<Backend> backend;
    std::map<Tensor*, std::vector<uint8_t>> pending;
    std::vector<std::unique_ptr<Buffer>> buffers;
};

std::vector<double> to_double(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

// What the backend sees of values stored as type: the reference multiplies the same weights.
std::vector<double> stored(DType type, const std::vector<float>& values, int64_t ne0) {
    return to_double(decode(type, encode(type, values, ne0), ne0));
}

// Same bound as MUL_MAT's (tests/test_ops.cpp): float weights leave f32 rounding (~1e-7); block types
// dot against activations quantized to 8 bits, an rms error of 0.25..0.65% of a uniform input.
double mul_mat_tolerance(DType type) { return dtype_traits(type).is_quantized ? 1.2e-2 : 1e-6; }

// Distinct ids per token, as routing makes them: a random n_used-subset of [0, n_expert) per column.
std::vector<int32_t> random_routes(int64_t n_used, int64_t T, int64_t n_expert) {
    std::vector<int32_t> out;
    for (int64_t t = 0; t < T; ++t) {
        std::vector<int32_t> all(static_cast<size_t>(n_expert));
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), mf_test::rng());
        out.insert(out.end(), all.begin(), all.begin() + n_used);
    }
    return out;
}

// Token t's n values of a [n, T] array.
template <typename V>
std::vector<V> token_slice(const std::vector<V>& v, int64_t n, int64_t t) {
    return std::vector<V>(v.begin() + n * t, v.begin() + n * (t + 1));
}

// The stable descending order TOP_K promises: numbers by value, then NaN, ties by index.
std::vector<int32_t> ref_top_k(const std::vector<float>& row, int k) {
    std::vector<int32_t> idx(row.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
        const bool na = std::isnan(row[size_t(a)]), nb = std::isnan(row[size_t(b)]);
        if (na != nb) return nb;
        return !na && row[size_t(a)] > row[size_t(b)];
    });
    idx.resize(size_t(k));
    return idx;
}

}  // namespace

// ---- MUL_MAT_ID ----------------------------------------------------------------------------------

TEST_CASE("mul_mat_id, plain and weighted, matches the double reference for every type, T and n_used 1 and > 1") {
    const int64_t K = 256, M = 37, n_expert = 5;  // M: not a multiple of the row tile
    for (DType type : kWeightTypes) {
        for (int64_t T : {1, 6}) {
            for (int64_t n_used : {1, 3}) {
                for (bool shared_x : {true, false}) {  // one activation per token, or one per used slot
                    INFO(dtype_name(type) << " T=" << T << " n_used=" << n_used << " shared_x=" << shared_x);
                    Harness h;
                    const int64_t n_b = shared_x ? 1 : n_used;
                    const auto w_values = random_floats(size_t(K * M * n_expert));
                    const auto x_values = random_floats(size_t(K * n_b * T));
                    const auto route = random_routes(n_used, T, n_expert);
                    Tensor* w = h.typed(type, {K, M, n_expert}, w_values);
                    Tensor* x = h.f32({K, n_b, T}, x_values);
                    Tensor* ids = h.i32({n_used, T}, route);
                    const auto got = h.run_f32(mul_mat_id(h.ctx, w, x, ids));

                    const auto wd = stored(type, w_values, K);
                    std::vector<double> ref(size_t(M * n_used * T));
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t u = 0; u < n_used; ++u)
                            for (int64_t m = 0; m < M; ++m) {
                                const int64_t e = route[size_t(u + n_used * t)];
                                double s = 0;
                                for (int64_t k = 0; k < K; ++k)
                                    s += wd[size_t(k + K * (m + M * e))] *
                                         x_values[size_t(k + K * ((shared_x ? 0 : u) + n_b * t))];
                                ref[size_t(m + M * (u + n_used * t))] = s;
                            }
                    const double err = rel_error(got.data(), ref.data(), ref.size());
                    INFO("rel error " << err);
                    CHECK(err < mul_mat_tolerance(type));

                    // The weighted form (src3): each token's slots summed, times their weights, in one
                    // op. The weights as f32 [n_used, T], or as a transposed view of [T, n_used].
                    const bool strided = !shared_x;
                    const auto wt_values = random_floats(size_t(n_used * T), 0.0f, 1.0f);
                    Tensor* wts =
                        strided ? transpose(h.ctx, h.f32({T, n_used}, wt_values)) : h.f32({n_used, T}, wt_values);
                    const auto got_w = h.run_f32(mul_mat_id(h.ctx, w, x, ids, wts));
                    REQUIRE(got_w.size() == size_t(M * T));
                    std::vector<double> ref_w(size_t(M * T), 0.0);
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t u = 0; u < n_used; ++u) {
                            const double wu = wt_values[size_t(strided ? t + T * u : u + n_used * t)];
                            for (int64_t m = 0; m < M; ++m)
                                ref_w[size_t(m + M * t)] += wu * ref[size_t(m + M * (u + n_used * t))];
                        }
                    const double err_w = rel_error(got_w.data(), ref_w.data(), ref_w.size());
                    INFO("weighted: rel error " << err_w);
                    CHECK(err_w < mul_mat_tolerance(type));

                    // Gated by the router (MoeGate::SOFTMAX): each slot's weight is its expert's share of
                    // the softmax over the token's logits [n_expert, T], times a scale.
                    const auto logit_values = random_floats(size_t(n_expert * T), -3.0f, 3.0f);
                    const float gate_scale = shared_x ? 1.0f : 2.5f;
                    Tensor* logits = h.f32({n_expert, T}, logit_values);
                    const auto got_g = h.run_f32(mul_mat_id_softmax_gated(h.ctx, w, x, ids, logits, gate_scale));
                    REQUIRE(got_g.size() == size_t(M * T));
                    std::vector<double> ref_g(size_t(M * T), 0.0);
                    for (int64_t t = 0; t < T; ++t) {
                        double z = 0.0;
                        for (int64_t e = 0; e < n_expert; ++e) z += std::exp(double(logit_values[size_t(e + n_expert * t)]));
                        for (int64_t u = 0; u < n_used; ++u) {
                            const int64_t e = route[size_t(u + n_used * t)];
                            const double wu = std::exp(double(logit_values[size_t(e + n_expert * t)])) / z * gate_scale;
                            for (int64_t m = 0; m < M; ++m)
                                ref_g[size_t(m + M * t)] += wu * ref[size_t(m + M * (u + n_used * t))];
                        }
                    }
                    const double err_g = rel_error(got_g.data(), ref_g.data(), ref_g.size());
                    INFO("softmax-gated: rel error " << err_g);
                    CHECK(err_g < mul_mat_tolerance(type));
                }
            }
        }
    }
}

TEST_CASE("mul_mat_id never uses an expert no token chose, and tokens may share an expert") {
    // Unchosen experts hold NaN: any use of them would poison the output.
    const int64_t K = 64, M = 9, n_expert = 6, n_used = 2, T = 4;
    Harness h;
    std::vector<float> w_values = random_floats(size_t(K * M * n_expert));
    const std::vector<int32_t> route = {4, 1, 1, 4, 4, 1, 1, 1};  // expert 1 twice in one token
    for (int64_t e : {0, 2, 3, 5})
        std::fill(w_values.begin() + K * M * e, w_values.begin() + K * M * (e + 1), std::nanf(""));
    const auto x_values = random_floats(size_t(K * T));
    Tensor* w = h.f32({K, M, n_expert}, w_values);
    Tensor* x = h.f32({K, 1, T}, x_values);
    const auto got = h.run_f32(mul_mat_id(h.ctx, w, x, h.i32({n_used, T}, route)));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t u = 0; u < n_used; ++u)
            for (int64_t m = 0; m < M; ++m) {
                const int64_t e = route[size_t(u + n_used * t)];
                double s = 0;
                for (int64_t k = 0; k < K; ++k) s += double(w_values[size_t(k + K * (m + M * e))]) * x_values[size_t(k + K * t)];
                const float v = got[size_t(m + M * (u + n_used * t))];
                REQUIRE(std::isfinite(v));
                CHECK(std::fabs(v - s) <= 1e-5 * (1.0 + std::fabs(s)));
            }
}

TEST_CASE("mul_mat_id in prefill gives each token the bits it gets alone (four-row dots where an expert has four)") {
    // Prefill dots four of an expert's tokens through one four-row dot; a token alone takes the single-row
    // dot. The four-row dots promise each column the single-row dot's bits, so every row must match.
    const int64_t K = 256, M = 21, n_expert = 6, n_used = 4, T = 11;  // 44 pairs: several experts have 4+
#if defined(__AVX2__)
    REQUIRE(bool(dtype_traits(DType::Q4_0).vec_dot4));  // else nothing here takes the four-row path
#endif
    for (DType type : kWeightTypes) {
        for (bool shared_x : {true, false}) {
            INFO(dtype_name(type) << " shared_x=" << shared_x
                                  << " four-row dot: " << bool(dtype_traits(type).vec_dot4));
            Harness h(2);
            const int64_t n_b = shared_x ? 1 : n_used;
            const auto w_values = random_floats(size_t(K * M * n_expert));
            const auto x_values = random_floats(size_t(K * n_b * T));
            const auto wt_values = random_floats(size_t(n_used * T), 0.0f, 1.0f);
            const auto route = random_routes(n_used, T, n_expert);
            Tensor* w = h.typed(type, {K, M, n_expert}, w_values);
            const auto all = h.run_f32(mul_mat_id(h.ctx, w, h.f32({K, n_b, T}, x_values), h.i32({n_used, T}, route)));
            const auto all_w = h.run_f32(mul_mat_id(h.ctx, w, h.f32({K, n_b, T}, x_values), h.i32({n_used, T}, route),
                                                    h.f32({n_used, T}, wt_values)));
            for (int64_t t = 0; t < T; ++t) {
                Tensor* x1 = h.f32({K, n_b, 1}, token_slice(x_values, K * n_b, t));
                Tensor* ids1 = h.i32({n_used, 1}, token_slice(route, n_used, t));
                const auto one = h.run_f32(mul_mat_id(h.ctx, w, x1, ids1));
                const auto one_w =
                    h.run_f32(mul_mat_id(h.ctx, w, x1, ids1, h.f32({n_used, 1}, token_slice(wt_values, n_used, t))));
                INFO("token " << t);
                CHECK(std::memcmp(one.data(), all.data() + M * n_used * t, one.size() * sizeof(float)) == 0);
                CHECK(std::memcmp(one_w.data(), all_w.data() + M * t, one_w.size() * sizeof(float)) == 0);
            }
        }
    }
}

// ---- TOP_K ---------------------------------------------------------------------------------------

TEST_CASE("top_k returns the k largest per row, largest first, equal values in index order") {
    const int64_t n = 64, rows = 9;
    for (int k : {1, 6, 64}) {
        INFO("k=" << k);
        Harness h;
        // Eight levels only, so most rows hold runs of equal values across the top-k boundary.
        std::vector<float> v = random_floats(size_t(n * rows));
        for (auto& x : v) x = std::floor(x * 4.0f) / 4.0f;
        const auto got = h.run_i32(top_k(h.ctx, h.f32({n, rows}, v), k));
        REQUIRE(got.size() == size_t(k * rows));
        for (int64_t r = 0; r < rows; ++r) {
            const std::vector<float> row(v.begin() + r * n, v.begin() + (r + 1) * n);
            const auto want = ref_top_k(row, k);
            CHECK(std::vector<int32_t>(got.begin() + r * k, got.begin() + (r + 1) * k) == want);
        }
    }
}

TEST_CASE("top_k ranks NaN below every number and reads strided rows") {
    Harness h;
    const int64_t n = 10, rows = 3;
    // Stored [rows, n] and transposed to [n, rows]: each row of the view is strided.
    std::vector<float> stored_v = random_floats(size_t(n * rows));
    stored_v[0 + rows * 2] = std::nanf("");  // row 0, element 2
    stored_v[0 + rows * 7] = std::nanf("");
    stored_v[1 + rows * 4] = -std::numeric_limits<float>::infinity();
    Tensor* a = transpose(h.ctx, h.f32({rows, n}, stored_v));
    const int k = 10;
    const auto got = h.run_i32(top_k(h.ctx, a, k));
    for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> row(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) row[size_t(i)] = stored_v[size_t(r + rows * i)];
        CHECK(std::vector<int32_t>(got.begin() + r * k, got.begin() + (r + 1) * k) == ref_top_k(row, k));
    }
    CHECK(got[8] == 2);  // the NaNs last, in index order
    CHECK(got[9] == 7);
}

// ---- SUM_ROWS, DIV, SIGMOID ----------------------------------------------------------------------

TEST_CASE("sum_rows sums each row of a permuted view; div broadcasts; sigmoid") {
    const int64_t A = 6, B = 33, C = 4;
    const auto v = random_floats(size_t(A * B * C));
    SUBCASE("sum_rows") {
        Harness h;
        // [A, B, C] viewed as [B, A, C]: the MoE's weighted sum over the used slots.
        Tensor* p = permute(h.ctx, h.f32({A, B, C}, v), 1, 0, 2, 3);
        const auto got = h.run_f32(sum_rows(h.ctx, p));
        REQUIRE(got.size() == size_t(A * C));
        std::vector<double> ref(size_t(A * C), 0.0);
        for (int64_t c = 0; c < C; ++c)
            for (int64_t b = 0; b < B; ++b)
                for (int64_t a = 0; a < A; ++a) ref[size_t(a + A * c)] += v[size_t(a + A * (b + B * c))];
        // The CPU sums in double: only the final rounding to f32 remains.
        CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-7);
    }
    SUBCASE("div") {
        Harness h;
        const auto d = random_floats(size_t(B * C), 0.5f, 2.0f);
        const auto got = h.run_f32(div(h.ctx, h.f32({A, B, C}, v), h.f32({1, B, C}, d)));
        for (int64_t i = 0; i < A * B * C; ++i)  // one correctly rounded f32 division
            CHECK(got[size_t(i)] == float(double(v[size_t(i)]) / d[size_t(i / A)]));
    }
    SUBCASE("sigmoid") {
        Harness h;
        auto x = random_floats(size_t(A * B), -12.0f, 12.0f);
        const auto got = h.run_f32(sigmoid(h.ctx, h.f32({A, B}, x)));
        std::vector<double> ref(x.size());
        for (size_t i = 0; i < x.size(); ++i) ref[i] = 1.0 / (1.0 + std::exp(-double(x[i])));
        // expf and one division in f32: a few ulps.
        CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-6);
    }
}

// ---- build_ffn_moe -------------------------------------------------------------------------------

namespace {

struct MoeCase {
    HParams::ExpertGating gating;
    bool norm;
    bool bias;
    uint32_t n_shared;
    float scale;
    DType expert_type;
};

double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }

// Weights of one tiny MoE layer as host values (the reference reads them dequantized).
struct MoeLayer {
    int64_t n_embd, n_ff, n_expert, n_used, n_shared;
    std::vector<float> gate_inp, probs_b, gate_exps, up_exps, down_exps, gate_sh, up_sh, down_sh;
};

// row-major [K, M, (E)] weights times x [K]: row m of matrix e.
double dot_row(const std::vector<double>& w, int64_t K, int64_t M, int64_t e, int64_t m, const double* x) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += w[size_t(k + K * (m + M * e))] * x[k];
    return s;
}

// The whole MoE FFN of one token in double, as llama.cpp's build_moe_ffn computes it for deepseek2.
// Returns false (and nothing) when the top-k boundary has a near tie that f32 could break the other way.
bool ref_moe_token(const MoeLayer& L, const MoeCase& c, const std::vector<double>& gexp, const std::vector<double>& uexp,
                   const std::vector<double>& dexp, const std::vector<double>& gsh, const std::vector<double>& ush,
                   const std::vector<double>& dsh, const double* x, double* out) {
    const int64_t E = L.n_expert;
    std::vector<double> probs(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
        double logit = 0;
        for (int64_t k = 0; k < L.n_embd; ++k) logit += double(L.gate_inp[size_t(k + L.n_embd * e)]) * x[k];
        probs[size_t(e)] = logit;
    }
    if (c.gating == HParams::ExpertGating::SOFTMAX) {
        const double mx = *std::max_element(probs.begin(), probs.end());
        double sum = 0;
        for (auto& p : probs) sum += (p = std::exp(p - mx));
        for (auto& p : probs) p /= sum;
    } else {
        for (auto& p : probs) p = 1.0 / (1.0 + std::exp(-p));
    }
    std::vector<double> sel = probs;
    if (c.bias)
        for (int64_t e = 0; e < E; ++e) sel[size_t(e)] += L.probs_b[size_t(e)];
    std::vector<int64_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return sel[size_t(a)] > sel[size_t(b)]; });
    if (L.n_used < E && sel[size_t(order[size_t(L.n_used - 1)])] - sel[size_t(order[size_t(L.n_used)])] < 1e-4)
        return false;
    std::vector<double> w(static_cast<size_t>(L.n_used));
    double wsum = 0;
    for (int64_t u = 0; u < L.n_used; ++u) wsum += (w[size_t(u)] = probs[size_t(order[size_t(u)])]);
    for (auto& v : w) v = (c.norm ? v / wsum : v) * c.scale;

    // SwiGLU FFN of matrix e of [K, n_ff, *] gate/up and [n_ff, K, *] down, accumulated into out.
    auto ffn = [&](const std::vector<double>& g, const std::vector<double>& up, const std::vector<double>& dn,
                   int64_t n_ff, int64_t e, double weight) {
        std::vector<double> hidden(static_cast<size_t>(n_ff));
        for (int64_t j = 0; j < n_ff; ++j)
            hidden[size_t(j)] = silu_ref(dot_row(g, L.n_embd, n_ff, e, j, x)) * dot_row(up, L.n_embd, n_ff, e, j, x);
        for (int64_t i = 0; i < L.n_embd; ++i) out[i] += weight * dot_row(dn, n_ff, L.n_embd, e, i, hidden.data());
    };
    std::fill(out, out + L.n_embd, 0.0);
    for (int64_t u = 0; u < L.n_used; ++u) ffn(gexp, uexp, dexp, L.n_ff, order[size_t(u)], w[size_t(u)]);
    if (L.n_shared) ffn(gsh, ush, dsh, L.n_ff * L.n_shared, 0, 1.0);
    return true;
}

}  // namespace

TEST_CASE("build_ffn_moe matches a double reference of the whole MoE FFN") {
    const std::vector<MoeCase> cases = {
        {HParams::ExpertGating::SOFTMAX, false, false, 2, 1.0f, DType::F32},  // DeepSeek-V2(-Lite)
        {HParams::ExpertGating::SOFTMAX, true, false, 1, 1.0f, DType::F32},
        {HParams::ExpertGating::SOFTMAX, false, true, 0, 16.0f, DType::F32},
        {HParams::ExpertGating::SIGMOID, true, true, 1, 2.5f, DType::F32},     // DeepSeek-V3
        {HParams::ExpertGating::SIGMOID, false, false, 2, 1.0f, DType::F32},
        {HParams::ExpertGating::SIGMOID, true, false, 0, 1.0f, DType::F32},
        {HParams::ExpertGating::SOFTMAX, true, true, 2, 1.5f, DType::Q8_0},
        {HParams::ExpertGating::SIGMOID, true, true, 1, 1.0f, DType::Q4_K},
        {HParams::ExpertGating::SOFTMAX, false, false, 1, 2.0f, DType::Q4_0},  // gated in the down, scaled
    };
    for (const MoeCase& c : cases) {
        for (int64_t T : {1, 7}) {
            INFO("gating=" << int(c.gating) << " norm=" << c.norm << " bias=" << c.bias << " shared=" << c.n_shared
                           << " scale=" << c.scale << " experts=" << dtype_name(c.expert_type) << " T=" << T);
            const bool k_quant = dtype_traits(c.expert_type).block_size == 256;
            MoeLayer L{k_quant ? 256 : 64, k_quant ? 256 : 32, 8, 3, c.n_shared, {}, {}, {}, {}, {}, {}, {}, {}};
            const int64_t D = L.n_embd, F = L.n_ff, E = L.n_expert, F_sh = F * L.n_shared;
            L.gate_exps = random_floats(size_t(D * F * E));
            L.up_exps = random_floats(size_t(D * F * E));
            L.down_exps = random_floats(size_t(F * D * E));
            L.gate_sh = random_floats(size_t(D * F_sh));
            L.up_sh = random_floats(size_t(D * F_sh));
            L.down_sh = random_floats(size_t(F_sh * D));
            L.probs_b = random_floats(size_t(E), -0.3f, 0.3f);
            const auto gexp = stored(c.expert_type, L.gate_exps, D), uexp = stored(c.expert_type, L.up_exps, D);
            const auto dexp = stored(c.expert_type, L.down_exps, F);
            const auto gsh = stored(c.expert_type, L.gate_sh, D), ush = stored(c.expert_type, L.up_sh, D);
            const auto dsh = F_sh ? stored(c.expert_type, L.down_sh, F_sh) : std::vector<double>();

            // Inputs are redrawn while any token has a near tie at the top-k boundary, where f32 and
            // double may pick different experts (and the outputs then rightly differ).
            std::vector<float> x;
            std::vector<double> ref(size_t(D * T));
            for (bool clear = false; !clear;) {
                L.gate_inp = random_floats(size_t(D * E), -0.3f, 0.3f);
                x = random_floats(size_t(D * T));
                const auto xd = to_double(x);
                clear = true;
                for (int64_t t = 0; t < T && clear; ++t)
                    clear = ref_moe_token(L, c, gexp, uexp, dexp, gsh, ush, dsh, &xd[size_t(D * t)], &ref[size_t(D * t)]);
            }

            Harness h;
            Model model;
            model.hp.n_embd = uint32_t(D);
            model.hp.n_expert = uint32_t(E);
            model.hp.n_expert_used = uint32_t(L.n_used);
            model.hp.n_expert_shared = c.n_shared;
            model.hp.n_ff_exp = uint32_t(F);
            model.hp.expert_gating = c.gating;
            model.hp.expert_weights_norm = c.norm;
            model.hp.expert_weights_scale = c.scale;
            LayerWeights l;
            l.ffn_gate_inp = h.f32({D, E}, L.gate_inp);
            if (c.bias) l.ffn_exp_probs_b = h.f32({E}, L.probs_b);
            l.ffn_gate_exps = h.typed(c.expert_type, {D, F, E}, L.gate_exps);
            l.ffn_up_exps = h.typed(c.expert_type, {D, F, E}, L.up_exps);
            l.ffn_down_exps = h.typed(c.expert_type, {F, D, E}, L.down_exps);
            if (c.n_shared) {
                l.ffn_gate_shexp = h.typed(c.expert_type, {D, F_sh}, L.gate_sh);
                l.ffn_up_shexp = h.typed(c.expert_type, {D, F_sh}, L.up_sh);
                l.ffn_down_shexp = h.typed(c.expert_type, {F_sh, D}, L.down_sh);
            }
            Graph graph;
            KVCache kv;
            ForwardState s{h.ctx, graph, model, kv, uint32_t(T), true, nullptr, nullptr, {}, {}};
            const std::vector<float> residual = random_floats(size_t(D * T));
            for (size_t i = 0; i < ref.size(); ++i) ref[i] += double(residual[i]);
            Tensor* out = build_ffn_moe(s, h.f32({D, T}, x), h.f32({D, T}, residual), l);
            REQUIRE(out->ne[0] == D);
            REQUIRE(out->ne[1] == T);
            // The routing weights enter the step's graph before the experts' matmuls, so the down
            // projection's SWIGLU is the node just before it (what the CUDA backend's fusion needs).
            graph_expand(graph, out);
            const auto down = std::find_if(graph.nodes.begin(), graph.nodes.end(),
                                           [](const Tensor* n) { return n->op == Op::MUL_MAT_ID && n->src[3]; });
            REQUIRE(down != graph.nodes.end());
            CHECK((*(down - 1))->op == Op::SWIGLU);
            // The residual (plus the shared experts' down projection) is added just after the routed
            // down projection, which then stores the sum (CUDA's add fusion) ...
            REQUIRE(down + 1 != graph.nodes.end());
            CHECK((*(down + 1))->op == Op::ADD);
            // ... and the shared experts' gate and up come before the routed ones, so these reuse the
            // quantized x, and their down projection is followed by its residual ADD.
            const auto at = [&](const Tensor* w) {
                return std::find_if(graph.nodes.begin(), graph.nodes.end(),
                                    [w](const Tensor* n) { return n->src[0] == w; });
            };
            if (c.n_shared) {
                CHECK(at(l.ffn_gate_shexp) < at(l.ffn_gate_exps));
                REQUIRE(at(l.ffn_down_shexp) + 1 != graph.nodes.end());
                CHECK((*(at(l.ffn_down_shexp) + 1))->op == Op::ADD);
            }
            // Softmax gating without bias or renormalization takes each slot's weight from the router's
            // logits inside the down projection: no SOFT_MAX or GET_ROWS (the weights' gather) in the layer.
            const bool gated = c.gating == HParams::ExpertGating::SOFTMAX && !c.bias && !c.norm;
            CHECK(((*down)->op_param_i(0) == int32_t(MoeGate::SOFTMAX)) == gated);
            const bool routing_ops = std::any_of(graph.nodes.begin(), graph.nodes.end(), [](const Tensor* n) {
                return n->op == Op::SOFT_MAX || n->op == Op::GET_ROWS;
            });
            CHECK(routing_ops == !gated);
            const auto got = h.run_f32(out);
            const double err = rel_error(got.data(), ref.data(), ref.size());
            // f32 experts: rounding only. Block types: every expert matmul quantizes its activations
            // to 8 bits (~0.5% each, mul_mat_tolerance) and the down projection sees the error of the
            // gate and up ones too, so the bound is about twice a single product's.
            const double tol = c.expert_type == DType::F32 ? 1e-5 : 2.5e-2;
            INFO("rel error " << err << ", tolerance " << tol);
            CHECK(err < tol);
        }
    }
}
