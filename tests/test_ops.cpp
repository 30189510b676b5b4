// The CPU backend's ops against naive double-precision references written here, on fresh random
// inputs: every weight type through mul_mat and get_rows, element-wise, norm, rope, softmax, copies.
#include <doctest/doctest.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <map>
#include <memory>

#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/graph.h"
#include "core/ops.h"
#include "row_codec.h"
#include "test_util.h"

using namespace mf;
using mf_test::random_floats;
using mf_test::rel_error;

namespace {

const DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                              DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// ---- host-side conversions (only through the dtype table's function pointers) ------------------

using mf_test::decode;
using mf_test::encode;

// The values a (possibly strided) f32 view shows, in its logical row-major order, read from the
// host copy of the contiguous f32 tensor that owns its memory.
std::vector<double> view_values(const Tensor* v, const std::vector<float>& owner) {
    std::vector<double> out;
    out.reserve(size_t(v->nelements()));
    for (int64_t i3 = 0; i3 < v->ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < v->ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < v->ne[1]; ++i1)
                for (int64_t i0 = 0; i0 < v->ne[0]; ++i0) {
                    const size_t byte = v->view_offs + i0 * v->nb[0] + i1 * v->nb[1] + i2 * v->nb[2] + i3 * v->nb[3];
                    out.push_back(owner[byte / sizeof(float)]);
                }
    return out;
}

std::vector<double> to_double(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

// ---- a tiny harness: leaf tensors with host data, one graph run on a CPU backend ---------------

struct Harness {
    explicit Harness(int n_threads = 2) : backend(make_cpu_backend(n_threads)) {}

    Tensor* leaf(DType type, std::initializer_list<int64_t> shape, std::vector<uint8_t> bytes) {
        int64_t ne[4] = {1, 1, 1, 1};
        int n = 0;
        for (int64_t d : shape) ne[n++] = d;
        Tensor* t = ctx.new_tensor(type, n, ne);
        REQUIRE(bytes.size() == t->nbytes());
        pending[t] = std::move(bytes);
        return t;
    }

    // An f32 leaf filled with the given values.
    Tensor* f32(std::initializer_list<int64_t> shape, const std::vector<float>& values) {
        return leaf(DType::F32, shape, encode(DType::F32, values, *shape.begin()));
    }

    // A leaf of `type` holding `values` converted with from_float (row length = first dim).
    Tensor* typed(DType type, std::initializer_list<int64_t> shape, const std::vector<float>& values) {
        return leaf(type, shape, encode(type, values, *shape.begin()));
    }

    Tensor* i32(std::initializer_list<int64_t> shape, const std::vector<int32_t>& values) {
        std::vector<uint8_t> bytes(values.size() * 4);
        std::memcpy(bytes.data(), values.data(), bytes.size());
        return leaf(DType::I32, shape, std::move(bytes));
    }

    // Allocates and uploads the leafs, plans and allocates the graph, computes it.
    void compute(const std::vector<Tensor*>& outputs) {
        Graph g = build_graph(outputs);
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

    // Runs the graph of out and returns its contents (out must be a contiguous f32 tensor).
    std::vector<float> run(Tensor* out) {
        compute({out});
        return read_f32(out);
    }

    std::vector<float> read_f32(const Tensor* t) {
        REQUIRE(t->type == DType::F32);
        std::vector<float> v(size_t(t->nelements()));
        tensor_get(t, v.data());
        return v;
    }

    std::vector<uint8_t> read_bytes(const Tensor* t) {
        std::vector<uint8_t> v(t->nbytes());
        tensor_get(t, v.data());
        return v;
    }

    Context ctx;
    std::unique_ptr<Backend> backend;
    std::map<Tensor*, std::vector<uint8_t>> pending;
    std::vector<std::unique_ptr<Buffer>> buffers;
};

// ---- references ---------------------------------------------------------------------------------

// w [K, M, B2, B3], x [K, N, C2, C3] (both logical row-major) -> [M, N, C2, C3]
std::vector<double> ref_mul_mat(const std::vector<double>& w, const std::vector<double>& x, int64_t K, int64_t M,
                                int64_t B2, int64_t B3, int64_t N, int64_t C2, int64_t C3) {
    std::vector<double> out(size_t(M * N * C2 * C3));
    for (int64_t c3 = 0; c3 < C3; ++c3)
        for (int64_t c2 = 0; c2 < C2; ++c2)
            for (int64_t n = 0; n < N; ++n)
                for (int64_t m = 0; m < M; ++m) {
                    const double* wr = &w[size_t(K * (m + M * (c2 / (C2 / B2) + B2 * (c3 / (C3 / B3)))))];
                    const double* xr = &x[size_t(K * (n + N * (c2 + C2 * c3)))];
                    double s = 0;
                    for (int64_t k = 0; k < K; ++k) s += wr[k] * xr[k];
                    out[size_t(m + M * (n + N * (c2 + C2 * c3)))] = s;
                }
    return out;
}

// Relative-error bound for mul_mat against the double reference over the dequantized weights.
// Weights are exact in the reference, so what remains is the activation side:
// - f32, f16, bf16 weights dot f32 activations: f32 rounding only (measured ~1e-7 at K = 256).
// - block types quantize each activation row to 8 bits first (q8_0 / q8_1 with a scale per 32,
//   q8_K per 256): an rms error of ~0.4% of a uniform input, measured 0.25..0.65% over 30 seeds.
double mul_mat_tolerance(DType type) {
    if (!dtype_traits(type).is_quantized) return 1e-6;
    return 1.2e-2;
}

double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }
double gelu_ref(double x) {
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

std::vector<int32_t> random_ids(size_t n, int32_t hi) {
    std::uniform_int_distribution<int32_t> d(0, hi - 1);
    std::vector<int32_t> v(n);
    for (auto& x : v) x = d(mf_test::rng());
    return v;
}

}  // namespace

// ---- MUL_MAT ------------------------------------------------------------------------------------

TEST_CASE("mul_mat matches the double reference for every weight type, N = 1 and N > 1") {
    const int64_t K = 256, M = 37;  // K: one K-quant super-block; M: not a multiple of the row tile
    for (DType type : kWeightTypes) {
        for (int64_t N : {1, 19}) {
            INFO(std::string(dtype_name(type)) << " N=" << N);
            Harness h;
            const auto w_values = random_floats(size_t(K * M));
            const auto x_values = random_floats(size_t(K * N));
            Tensor* w = h.typed(type, {K, M}, w_values);
            Tensor* x = h.f32({K, N}, x_values);
            const auto got = h.run(mul_mat(h.ctx, w, x));
            const auto w_deq = to_double(decode(type, encode(type, w_values, K), K));
            const auto ref = ref_mul_mat(w_deq, to_double(x_values), K, M, 1, 1, N, 1, 1);
            const double err = rel_error(got.data(), ref.data(), ref.size());
            INFO("rel error " << err);
            CHECK(err < mul_mat_tolerance(type));
        }
    }
}

TEST_CASE("mul_mat broadcasts weights over dims 2 and 3 (GQA) and reads permuted activations") {
    // Weights [K, M, B2=2, B3=1] serve C2 = 6 (three query heads per KV head) and C3 = 2.
    const int64_t K = 256, M = 21, B2 = 2, N = 5, C2 = 6, C3 = 2;
    for (DType type : {DType::F16, DType::Q8_0, DType::Q4_K}) {
        INFO(std::string(dtype_name(type)));
        Harness h;
        const auto w_values = random_floats(size_t(K * M * B2));
        Tensor* w = h.typed(type, {K, M, B2, 1}, w_values);
        // Activations stored [K, C2, N, C3] and permuted to [K, N, C2, C3]: packed rows, strided dims.
        const auto x_store = random_floats(size_t(K * C2 * N * C3));
        Tensor* xs = h.f32({K, C2, N, C3}, x_store);
        Tensor* x = permute(h.ctx, xs, 0, 2, 1, 3);
        const auto got = h.run(mul_mat(h.ctx, w, x));
        const auto w_deq = to_double(decode(type, encode(type, w_values, K), K));
        const auto ref = ref_mul_mat(w_deq, view_values(x, x_store), K, M, B2, 1, N, C2, C3);
        const double err = rel_error(got.data(), ref.data(), ref.size());
        INFO("rel error " << err);
        CHECK(err < mul_mat_tolerance(type));
    }
}

TEST_CASE("mul_mat reads a transposed activation view and a strided weight view (KV-cache style)") {
    const int64_t K = 64, n_ctx = 20, n_kv = 13, B2 = 2, N = 3, C2 = 4;
    for (DType type : {DType::F32, DType::F16, DType::Q8_0}) {
        INFO(std::string(dtype_name(type)));
        Harness h;
        const auto cache_values = random_floats(size_t(K * n_ctx * B2));
        Tensor* cache = h.typed(type, {K, n_ctx, B2}, cache_values);
        // The first n_kv rows of each head: rows packed, head stride that of the whole cache.
        Tensor* w = view_3d(h.ctx, cache, K, n_kv, B2, cache->nb[1], cache->nb[2], 0);
        // Activations stored [N, K, C2] and transposed: element stride N * 4 bytes.
        const auto x_store = random_floats(size_t(N * K * C2));
        Tensor* xs = h.f32({N, K, C2}, x_store);
        Tensor* x = transpose(h.ctx, xs);
        const auto got = h.run(mul_mat(h.ctx, w, x));
        const auto cache_deq = decode(type, encode(type, cache_values, K), K);
        std::vector<double> w_deq;
        for (int64_t b = 0; b < B2; ++b)
            for (int64_t r = 0; r < n_kv; ++r)
                for (int64_t k = 0; k < K; ++k) w_deq.push_back(cache_deq[size_t(k + K * (r + n_ctx * b))]);
        const auto ref = ref_mul_mat(w_deq, view_values(x, x_store), K, n_kv, B2, 1, N, C2, 1);
        const double err = rel_error(got.data(), ref.data(), ref.size());
        INFO("rel error " << err);
        CHECK(err < mul_mat_tolerance(type));
    }
}

// ---- GET_ROWS -----------------------------------------------------------------------------------

TEST_CASE("get_rows returns the dequantized rows of every weight type, per batch") {
    const int64_t K = 256, n_rows = 10, n_ids = 7, B2 = 2;
    for (DType type : kWeightTypes) {
        INFO(std::string(dtype_name(type)));
        Harness h;
        const auto values = random_floats(size_t(K * n_rows * B2));
        Tensor* table = h.typed(type, {K, n_rows, B2}, values);
        const auto ids = random_ids(size_t(n_ids * B2), int32_t(n_rows));
        Tensor* id_t = h.i32({n_ids, B2}, ids);
        const auto got = h.run(get_rows(h.ctx, table, id_t));
        const auto deq = decode(type, encode(type, values, K), K);
        std::vector<float> want;
        for (int64_t b = 0; b < B2; ++b)
            for (int64_t i = 0; i < n_ids; ++i) {
                const float* row = &deq[size_t(K * (ids[size_t(i + n_ids * b)] + n_rows * b))];
                want.insert(want.end(), row, row + K);
            }
        CHECK(got == want);  // the same to_float, so bit-identical
    }
}

TEST_CASE("get_rows aborts on an out-of-range row id (a bug, not bad input)") {
    // The abort happens in a forked child, whose stderr comes back through a pipe.
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    std::fflush(stdout);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        std::signal(SIGABRT, SIG_DFL);  // doctest's crash handler would report a failure in the child
        Harness h(1);
        Tensor* table = h.f32({16, 4}, random_floats(64));
        h.run(get_rows(h.ctx, table, h.i32({2}, {1, 4})));
        _exit(0);
    }
    close(fds[1]);
    std::string err;
    char buf[256];
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) err.append(buf, size_t(n));
    close(fds[0]);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    CHECK(err.find("row id out of range") != std::string::npos);
}

// ---- element-wise -------------------------------------------------------------------------------

TEST_CASE("add and mul broadcast the second operand along every dimension") {
    const int64_t ne[4] = {8, 6, 4, 2};
    // Full shape; repeated over rows and batches; one value per row; a row pattern repeated in ne0.
    const int64_t b_shapes[][4] = {{8, 6, 4, 2}, {8, 1, 2, 1}, {1, 6, 1, 1}, {4, 3, 4, 2}};
    for (const auto& bs : b_shapes) {
        for (Op op : {Op::ADD, Op::MUL}) {
            INFO(std::string(op_name(op)) << " b=[" << bs[0] << "," << bs[1] << "," << bs[2] << "," << bs[3] << "]");
            Harness h;
            const auto a_values = random_floats(size_t(ne[0] * ne[1] * ne[2] * ne[3]));
            const auto b_values = random_floats(size_t(bs[0] * bs[1] * bs[2] * bs[3]));
            Tensor* a = h.f32({ne[0], ne[1], ne[2], ne[3]}, a_values);
            Tensor* b = h.f32({bs[0], bs[1], bs[2], bs[3]}, b_values);
            const auto got = h.run(op == Op::ADD ? add(h.ctx, a, b) : mul(h.ctx, a, b));
            std::vector<double> ref;
            for (int64_t i3 = 0; i3 < ne[3]; ++i3)
                for (int64_t i2 = 0; i2 < ne[2]; ++i2)
                    for (int64_t i1 = 0; i1 < ne[1]; ++i1)
                        for (int64_t i0 = 0; i0 < ne[0]; ++i0) {
                            const double x = a_values[size_t(i0 + ne[0] * (i1 + ne[1] * (i2 + ne[2] * i3)))];
                            const double y = b_values[size_t(i0 % bs[0] + bs[0] * (i1 % bs[1] + bs[1] * (i2 % bs[2] +
                                                                                   bs[2] * (i3 % bs[3]))))];
                            ref.push_back(op == Op::ADD ? x + y : x * y);
                        }
            CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-7);  // one f32 rounding
        }
    }
}

TEST_CASE("add reads a transposed (strided) first operand") {
    Harness h;
    const auto a_store = random_floats(6 * 9);
    const auto b_values = random_floats(9);
    Tensor* a = transpose(h.ctx, h.f32({6, 9}, a_store));  // [9, 6], element stride 24 bytes
    const auto got = h.run(add(h.ctx, a, h.f32({9, 1}, b_values)));
    const auto av = view_values(a, a_store);
    std::vector<double> ref;
    for (int64_t i1 = 0; i1 < 6; ++i1)
        for (int64_t i0 = 0; i0 < 9; ++i0) ref.push_back(av[size_t(i0 + 9 * i1)] + double(b_values[size_t(i0)]));
    CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-7);
}

TEST_CASE("scale multiplies by its parameter") {
    Harness h;
    const auto x = random_floats(300);
    const auto got = h.run(scale(h.ctx, h.f32({100, 3}, x), -0.37f));
    std::vector<double> ref;
    for (float v : x) ref.push_back(double(v) * double(-0.37f));
    CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-7);
}

TEST_CASE("silu, gelu, swiglu and geglu match their definitions") {
    Harness h;
    // Wide range so the tails of the sigmoid and tanh are exercised.
    const auto a_values = random_floats(64 * 5, -8.0f, 8.0f);
    const auto b_values = random_floats(64 * 5);
    Tensor* a = h.f32({64, 5}, a_values);
    Tensor* b = h.f32({64, 5}, b_values);
    Tensor* outs[4] = {silu(h.ctx, a), gelu(h.ctx, a), swiglu(h.ctx, a, b), geglu(h.ctx, a, b)};
    h.compute({outs[0], outs[1], outs[2], outs[3]});
    for (int k = 0; k < 4; ++k) {
        INFO(std::string(op_name(outs[k]->op)));
        std::vector<double> ref;
        for (size_t i = 0; i < a_values.size(); ++i) {
            const double x = a_values[i], y = b_values[i];
            const double r[4] = {silu_ref(x), gelu_ref(x), silu_ref(x) * y, gelu_ref(x) * y};
            ref.push_back(r[k]);
        }
        const auto got = h.read_f32(outs[k]);
        CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-6);  // f32 exp / tanh
    }
}

// Rows of 67 (eight-wide vector body plus a scalar tail on AVX2 builds) over [-100, 100] and the
// values where the sigmoid saturates: every element within 1e-6 of the double definition, relative
// to max(|ref|, 1e-6) (the far negative tail is ~0 either way) and to the conditioning of x / (1 +
// exp(-z)) in its argument z (x for SiLU, 2 sqrt(2/pi) (x + 0.044715 x^3) for GELU) where that
// exceeds 1: z itself is rounded to f32, and the result's relative error is that rounding (~|z|
// 2^-24) times 1 - sigmoid(z), in any f32 evaluation (a fixed 1e-6 failed about one seed in 30 at
// x ~ -4.5, with 1.03e-6). For z > 0 the factor is ~1: the positive side keeps the plain bound.
TEST_CASE("silu and gelu hold their precision element by element, vector body and tail, far into the tails") {
    Harness h;
    auto values = random_floats(67 * 6, -100.0f, 100.0f);
    const float special[] = {0.0f, -0.0f, 1e-20f, -1e-20f, 88.0f, -88.0f, 90.0f, -90.0f, 5e3f, -5e3f, 3.0f, -3.0f};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; ++i) values[i * 7] = special[i];
    Tensor* a = h.f32({67, 6}, values);
    Tensor* b = h.f32({67, 6}, std::vector<float>(values.size(), 1.0f));
    Tensor* outs[4] = {silu(h.ctx, a), gelu(h.ctx, a), swiglu(h.ctx, a, b), geglu(h.ctx, a, b)};
    h.compute({outs[0], outs[1], outs[2], outs[3]});
    for (int k = 0; k < 4; ++k) {
        INFO(std::string(op_name(outs[k]->op)));
        const auto got = h.read_f32(outs[k]);
        double worst = 0;
        for (size_t i = 0; i < values.size(); ++i) {
            const double x = values[i], ref = k % 2 == 0 ? silu_ref(x) : gelu_ref(x);
            const double z = k % 2 == 0 ? x : 2.0 * std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
            const double err = std::fabs(got[i] - ref) / std::max(std::fabs(ref), 1e-6);
            worst = std::max(worst, err / std::max(1.0, std::fabs(z) / (1.0 + std::exp(z))));
        }
        CHECK(worst < 1e-6);
    }
}

// ---- norm, rope, softmax ------------------------------------------------------------------------

TEST_CASE("rms_norm divides each row by its root mean square") {
    Harness h;
    const int64_t ne0 = 300, rows = 7;
    const float eps = 1e-5f;
    const auto x = random_floats(size_t(ne0 * rows), -3.0f, 3.0f);
    const auto got = h.run(rms_norm(h.ctx, h.f32({ne0, rows}, x), eps));
    std::vector<double> ref;
    for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < ne0; ++i) ss += double(x[size_t(r * ne0 + i)]) * x[size_t(r * ne0 + i)];
        const double s = 1.0 / std::sqrt(ss / ne0 + eps);
        for (int64_t i = 0; i < ne0; ++i) ref.push_back(x[size_t(r * ne0 + i)] * s);
    }
    CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-6);
}

TEST_CASE("rope rotates the first n_dims of each head, normal and NeoX pairing, with frequency factors") {
    const int64_t head_dim = 64, n_head = 3, n_tokens = 5;
    const int n_dims = 32;  // partial rotation: dims 32..63 must pass through
    const float freq_base = 10000.0f, freq_scale = 0.5f;
    for (bool with_factors : {false, true})
    for (RopeMode mode : {ROPE_NORMAL, ROPE_NEOX}) {
        INFO("mode " << int(mode) << ", frequency factors " << with_factors);
        Harness h;
        const auto x = random_floats(size_t(head_dim * n_head * n_tokens));
        const auto pos = random_ids(size_t(n_tokens), 4096);
        const auto factors = random_floats(size_t(n_dims / 2), 1.0f, 8.0f);
        Tensor* xt = h.f32({head_dim, n_head, n_tokens}, x);
        Tensor* pt = h.i32({n_tokens}, pos);
        Tensor* ft = with_factors ? h.f32({n_dims / 2}, factors) : nullptr;
        const auto got = h.run(rope(h.ctx, xt, pt, n_dims, mode, freq_base, freq_scale, ft));
        std::vector<double> ref(x.begin(), x.end());
        for (int64_t t = 0; t < n_tokens; ++t)
            for (int64_t hd = 0; hd < n_head; ++hd) {
                double* row = &ref[size_t(head_dim * (hd + n_head * t))];
                for (int i = 0; i < n_dims / 2; ++i) {
                    const double theta = pos[size_t(t)] * double(freq_scale) * std::pow(double(freq_base), -2.0 * i / n_dims) /
                                         (with_factors ? double(factors[size_t(i)]) : 1.0);
                    const int j0 = mode == ROPE_NEOX ? i : 2 * i;
                    const int j1 = mode == ROPE_NEOX ? i + n_dims / 2 : 2 * i + 1;
                    const double x0 = row[j0], x1 = row[j1];
                    row[j0] = x0 * std::cos(theta) - x1 * std::sin(theta);
                    row[j1] = x0 * std::sin(theta) + x1 * std::cos(theta);
                }
            }
        CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-6);  // f32 sin/cos of a double angle
        for (int64_t r = 0; r < n_head * n_tokens; ++r)
            for (int64_t i = n_dims; i < head_dim; ++i)
                CHECK(got[size_t(r * head_dim + i)] == x[size_t(r * head_dim + i)]);
    }
}

namespace {

// softmax over ne0 of (x * s + mask), mask row i1, broadcast over dims 2 and 3.
std::vector<double> ref_soft_max(const std::vector<float>& x, const std::vector<float>* mask, int64_t ne0,
                                 int64_t ne1, int64_t ne2, float s) {
    std::vector<double> out;
    for (int64_t i2 = 0; i2 < ne2; ++i2)
        for (int64_t i1 = 0; i1 < ne1; ++i1) {
            std::vector<double> v(static_cast<size_t>(ne0));
            double mx = -INFINITY;
            for (int64_t i = 0; i < ne0; ++i) {
                v[size_t(i)] = double(x[size_t(i + ne0 * (i1 + ne1 * i2))]) * s + (mask ? (*mask)[size_t(i + ne0 * i1)] : 0.0);
                mx = std::max(mx, v[size_t(i)]);
            }
            double sum = 0;
            for (auto& e : v) sum += (e = mx == -INFINITY ? 0.0 : std::exp(e - mx));
            for (auto& e : v) out.push_back(mx == -INFINITY ? 0.0 : e / sum);
        }
    return out;
}

}  // namespace

TEST_CASE("soft_max without a mask") {
    Harness h;
    const int64_t ne0 = 37, ne1 = 5, ne2 = 3;
    const auto x = random_floats(size_t(ne0 * ne1 * ne2), -5.0f, 5.0f);
    const auto got = h.run(soft_max(h.ctx, h.f32({ne0, ne1, ne2}, x), nullptr, 0.125f));
    const auto ref = ref_soft_max(x, nullptr, ne0, ne1, ne2, 0.125f);
    CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-6);
}

TEST_CASE("soft_max with a causal mask broadcast over heads; a fully masked row gives zeros") {
    Harness h;
    const int64_t ne0 = 37, ne1 = 5, ne2 = 3, mask_rows = 8;  // the mask may have more rows than used
    const auto x = random_floats(size_t(ne0 * ne1 * ne2), -5.0f, 5.0f);
    auto mask = random_floats(size_t(ne0 * mask_rows), -1.0f, 1.0f);
    for (int64_t r = 0; r < mask_rows; ++r)
        for (int64_t i = 0; i < ne0; ++i)
            if (i > 30 + r) mask[size_t(i + ne0 * r)] = -INFINITY;
    for (int64_t i = 0; i < ne0; ++i) mask[size_t(i + ne0 * 2)] = -INFINITY;  // row 2 sees nothing
    const auto got = h.run(soft_max(h.ctx, h.f32({ne0, ne1, ne2}, x), h.f32({ne0, mask_rows}, mask), 0.3f));
    const auto ref = ref_soft_max(x, &mask, ne0, ne1, ne2, 0.3f);
    CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-6);
    for (int64_t i2 = 0; i2 < ne2; ++i2)
        for (int64_t i = 0; i < ne0; ++i) CHECK(got[size_t(i + ne0 * (2 + ne1 * i2))] == 0.0f);
    for (float v : got) CHECK(std::isfinite(v));
}

// ---- CPY / cast / cont / concat -----------------------------------------------------------------

TEST_CASE("cpy f32 -> f16, bf16, q8_0, q4_0 and back matches the dtype table's conversions") {
    const int64_t ne0 = 64, rows = 6;
    for (DType type : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0}) {
        INFO(std::string(dtype_name(type)));
        Harness h;
        const auto x = random_floats(size_t(ne0 * rows));
        Tensor* xt = h.f32({ne0, rows}, x);
        Tensor* narrow = cast(h.ctx, xt, type);
        Tensor* back = cast(h.ctx, narrow, DType::F32);
        h.compute({narrow, back});
        CHECK(h.read_bytes(narrow) == encode(type, x, ne0));
        CHECK(h.read_f32(back) == decode(type, encode(type, x, ne0), ne0));
    }
}

TEST_CASE("cpy writes into a view of a bigger tensor at an offset (KV-cache store)") {
    const int64_t n_embd = 64, n_ctx = 16, n_tokens = 3, pos = 5;
    for (DType type : {DType::F16, DType::Q8_0}) {
        INFO(std::string(dtype_name(type)));
        Harness h;
        const auto cache_init = random_floats(size_t(n_embd * n_ctx));
        const auto k_cur = random_floats(size_t(n_embd * n_tokens));
        Tensor* cache = h.typed(type, {n_embd, n_ctx}, cache_init);
        Tensor* slot = view_2d(h.ctx, cache, n_embd, n_tokens, cache->nb[1], size_t(pos) * cache->nb[1]);
        h.compute({cpy(h.ctx, h.f32({n_embd, n_tokens}, k_cur), slot)});
        auto want = encode(type, cache_init, n_embd);
        const auto written = encode(type, k_cur, n_embd);
        std::copy(written.begin(), written.end(), want.begin() + long(pos * cache->nb[1]));
        CHECK(h.read_bytes(cache) == want);
    }
}

TEST_CASE("cpy into a transposed f16 view (V-cache store with one token per column)") {
    const int64_t n_embd = 24, n_ctx = 10, n_tokens = 4, pos = 3;
    Harness h;
    const auto cache_init = random_floats(size_t(n_ctx * n_embd));
    const auto v_cur = random_floats(size_t(n_embd * n_tokens));
    Tensor* cache = h.typed(DType::F16, {n_ctx, n_embd}, cache_init);  // row = one channel over positions
    Tensor* slot = view_2d(h.ctx, cache, n_tokens, n_embd, cache->nb[1], size_t(pos) * cache->nb[0]);
    Tensor* v = h.f32({n_embd, n_tokens}, v_cur);
    h.compute({cpy(h.ctx, transpose(h.ctx, v), slot)});
    auto want = decode(DType::F16, encode(DType::F16, cache_init, n_ctx), n_ctx);
    for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t c = 0; c < n_embd; ++c)
            want[size_t(pos + t + n_ctx * c)] = fp16_to_fp32(fp32_to_fp16(v_cur[size_t(c + n_embd * t)]));
    CHECK(decode(DType::F16, h.read_bytes(cache), n_ctx) == want);
}

TEST_CASE("cont of permuted and transposed views gives the logical order") {
    Harness h;
    const auto store = random_floats(8 * 5 * 3 * 2);
    Tensor* x = h.f32({8, 5, 3, 2}, store);
    Tensor* p = permute(h.ctx, x, 0, 2, 1, 3);  // [8, 3, 5, 2]
    Tensor* t = transpose(h.ctx, x);            // [5, 8, 3, 2]
    Tensor* pc = cont(h.ctx, p);
    Tensor* tc = cont(h.ctx, t);
    Tensor* tq = cast(h.ctx, reshape_2d(h.ctx, cont(h.ctx, p), 8 * 3, 5 * 2), DType::F16);
    h.compute({pc, tc, tq});
    const auto pv = view_values(p, store);
    const auto tv = view_values(t, store);
    CHECK(h.read_f32(pc) == std::vector<float>(pv.begin(), pv.end()));
    CHECK(h.read_f32(tc) == std::vector<float>(tv.begin(), tv.end()));
    CHECK(h.read_bytes(tq) == encode(DType::F16, std::vector<float>(pv.begin(), pv.end()), 8 * 3));
}

TEST_CASE("cpy between shapes with different row lengths keeps row-major element order") {
    Harness h;
    const auto a_values = random_floats(6 * 4);
    Tensor* a = h.f32({6, 4}, a_values);
    Tensor* b = h.f32({8, 3}, random_floats(8 * 3));
    Tensor* tt = transpose(h.ctx, a);  // [4, 6] strided source, rows of 4 into rows of 8
    Tensor* out = cpy(h.ctx, tt, b);
    h.compute({out});
    const auto want = view_values(tt, a_values);
    CHECK(h.read_f32(b) == std::vector<float>(want.begin(), want.end()));
}

TEST_CASE("cpy between shapes with equal rows but different outer dims maps rows in order") {
    Harness h;
    const auto a_values = random_floats(8 * 3 * 2);
    Tensor* a = permute(h.ctx, h.f32({8, 3, 2}, a_values), 0, 2, 1, 3);  // [8, 2, 3], strided rows
    Tensor* b = h.f32({8, 6}, random_floats(8 * 6));
    h.compute({cpy(h.ctx, a, b)});
    const auto want = view_values(a, a_values);
    CHECK(h.read_f32(b) == std::vector<float>(want.begin(), want.end()));
}

TEST_CASE("concat joins along dims 0, 1 and 2") {
    const int64_t ne[3] = {4, 3, 2};
    for (int dim = 0; dim < 3; ++dim) {
        INFO("dim " << dim);
        Harness h;
        int64_t bne[3] = {ne[0], ne[1], ne[2]};
        bne[dim] = 5;
        const auto av = random_floats(size_t(ne[0] * ne[1] * ne[2]));
        const auto bv = random_floats(size_t(bne[0] * bne[1] * bne[2]));
        Tensor* a = h.f32({ne[0], ne[1], ne[2]}, av);
        Tensor* b = h.f32({bne[0], bne[1], bne[2]}, bv);
        Tensor* c = concat(h.ctx, a, b, dim);
        const auto got = h.run(c);
        std::vector<float> want;
        for (int64_t i2 = 0; i2 < c->ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < c->ne[1]; ++i1)
                for (int64_t i0 = 0; i0 < c->ne[0]; ++i0) {
                    int64_t idx[3] = {i0, i1, i2};
                    if (idx[dim] < ne[dim]) {
                        want.push_back(av[size_t(idx[0] + ne[0] * (idx[1] + ne[1] * idx[2]))]);
                    } else {
                        idx[dim] -= ne[dim];
                        want.push_back(bv[size_t(idx[0] + bne[0] * (idx[1] + bne[1] * idx[2]))]);
                    }
                }
        CHECK(got == want);
    }
}

// ---- threads, graphs, errors ---------------------------------------------------------------------

namespace {

// A graph touching most kernels, built on its own harness from fixed host data. Sizes are large
// enough that every op is split into several chunks (row ops keep ~8K elements per chunk).
std::vector<float> mixed_graph(int n_threads, const std::vector<float>& wq, const std::vector<float>& wk,
                               const std::vector<float>& x, const std::vector<int32_t>& pos) {
    const int64_t K = 256, head_dim = 64, n_head = 8, T = 64;
    Harness h(n_threads);
    Tensor* xt = h.f32({K, T}, x);
    Tensor* q = mul_mat(h.ctx, h.typed(DType::Q4_K, {K, head_dim * n_head}, wq), rms_norm(h.ctx, xt, 1e-6f));
    Tensor* k = mul_mat(h.ctx, h.typed(DType::Q8_0, {K, head_dim * n_head}, wk), xt);
    k = swiglu(h.ctx, k, q);
    Tensor* pt = h.i32({T}, pos);
    q = rope(h.ctx, reshape_3d(h.ctx, q, head_dim, n_head, T), pt, head_dim, ROPE_NEOX, 10000.0f, 1.0f);
    k = rope(h.ctx, reshape_3d(h.ctx, k, head_dim, n_head, T), pt, 32, ROPE_NORMAL, 10000.0f, 1.0f);
    Tensor* kq = mul_mat(h.ctx, permute(h.ctx, k, 0, 2, 1, 3), permute(h.ctx, q, 0, 2, 1, 3));
    return h.run(soft_max(h.ctx, kq, nullptr, 0.125f));
}

}  // namespace

TEST_CASE("results are bit-identical with 1, 2 and 3 threads") {
    const auto wq = random_floats(256 * 512), wk = random_floats(256 * 512), x = random_floats(256 * 64);
    const auto pos = random_ids(64, 1000);
    const auto one = mixed_graph(1, wq, wk, x, pos);
    CHECK(mixed_graph(2, wq, wk, x, pos) == one);
    CHECK(mixed_graph(3, wq, wk, x, pos) == one);
}

TEST_CASE("a norm -> matmul -> swiglu -> matmul -> residual graph matches the reference") {
    const int64_t n_embd = 256, n_ff = 512, T = 4;
    Harness h;
    const auto x = random_floats(size_t(n_embd * T));
    const auto norm_w = random_floats(size_t(n_embd), 0.5f, 1.5f);
    const auto w_gate = random_floats(size_t(n_embd * n_ff));
    const auto w_up = random_floats(size_t(n_embd * n_ff));
    const auto w_down = random_floats(size_t(n_ff * n_embd));
    Tensor* xt = h.f32({n_embd, T}, x);
    Tensor* nt = h.f32({n_embd}, norm_w);
    Tensor* gate_t = h.typed(DType::F16, {n_embd, n_ff}, w_gate);
    Tensor* up_t = h.typed(DType::F16, {n_embd, n_ff}, w_up);
    Tensor* down_t = h.typed(DType::F16, {n_ff, n_embd}, w_down);
    Tensor* cur = mul(h.ctx, rms_norm(h.ctx, xt, 1e-5f), nt);
    cur = swiglu(h.ctx, mul_mat(h.ctx, gate_t, cur), mul_mat(h.ctx, up_t, cur));
    Tensor* out = add(h.ctx, mul_mat(h.ctx, down_t, cur), xt);

    Graph g = build_graph({out});
    const MemoryPlan plan = plan_memory(g, h.backend->alignment());
    CHECK(plan.arena_size < plan.naive_size);  // the planner did reuse bytes in this graph
    const auto got = h.run(out);

    const auto gate_d = to_double(decode(DType::F16, encode(DType::F16, w_gate, n_embd), n_embd));
    const auto up_d = to_double(decode(DType::F16, encode(DType::F16, w_up, n_embd), n_embd));
    const auto down_d = to_double(decode(DType::F16, encode(DType::F16, w_down, n_ff), n_ff));
    std::vector<double> normed(size_t(n_embd * T));
    for (int64_t t = 0; t < T; ++t) {
        double ss = 0;
        for (int64_t i = 0; i < n_embd; ++i) ss += double(x[size_t(i + n_embd * t)]) * x[size_t(i + n_embd * t)];
        const double s = 1.0 / std::sqrt(ss / n_embd + 1e-5);
        for (int64_t i = 0; i < n_embd; ++i)
            normed[size_t(i + n_embd * t)] = x[size_t(i + n_embd * t)] * s * norm_w[size_t(i)];
    }
    const auto g_ref = ref_mul_mat(gate_d, normed, n_embd, n_ff, 1, 1, T, 1, 1);
    const auto u_ref = ref_mul_mat(up_d, normed, n_embd, n_ff, 1, 1, T, 1, 1);
    std::vector<double> act(g_ref.size());
    for (size_t i = 0; i < act.size(); ++i) act[i] = silu_ref(g_ref[i]) * u_ref[i];
    auto ref = ref_mul_mat(down_d, act, n_ff, n_embd, 1, 1, T, 1, 1);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += x[i];
    // f16 weights with f32 activations: only f32 rounding through three matmuls.
    CHECK(rel_error(got.data(), ref.data(), ref.size()) < 1e-5);
}

TEST_CASE("compute_graph throws an Error naming an op the CPU backend cannot run") {
    Harness h;
    Tensor* x = h.f32({32, 2}, random_floats(64));
    Tensor* bad = cast(h.ctx, x, DType::I32);  // no f32 -> i32 conversion exists
    CHECK_FALSE(h.backend->supports_op(bad));
    try {
        h.compute({bad});
        FAIL("compute_graph accepted an unsupported node");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("CPY") != std::string::npos);
    }
}

// The CPU backend, counting supports_op calls (compute_graph's check before a graph runs).
class CountingBackend : public Backend {
public:
    explicit CountingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
    const char* name() const override { return inner_->name(); }
    std::unique_ptr<Buffer> alloc(size_t size) override { return inner_->alloc(size); }
    void free_memory(void* base) override { inner_->free_memory(base); }
    void upload(Tensor* t, const void* src, size_t offset, size_t size) override { inner_->upload(t, src, offset, size); }
    void download(const Tensor* t, void* dst, size_t offset, size_t size) override {
        inner_->download(t, dst, offset, size);
    }
    bool supports_op(const Tensor* node) const override {
        ++asked;
        return inner_->supports_op(node);
    }
    void compute(const Graph& g) override { inner_->compute(g); }
    void synchronize() override { inner_->synchronize(); }
    mutable size_t asked = 0;

private:
    std::unique_ptr<Backend> inner_;
};

// An allocated graph is fixed, so compute_graph checks its nodes once per allocation (Graph::stamp) and
// backend: a decode step repeats the same graph, and the check was host time the device waited for.
TEST_CASE("compute_graph checks a graph's nodes once an allocation, and again after a new one") {
    CountingBackend be(make_cpu_backend(2));
    Context ctx;
    Tensor* x = ctx.new_tensor_2d(DType::F32, 8, 2);
    x->flags |= TENSOR_INPUT;
    Tensor* y = scale(ctx, add(ctx, x, x), 0.5f);
    Graph g = build_graph({y});
    auto arena = allocate_graph(be, g);
    CHECK(g.stamp != 0);
    const std::vector<float> v = random_floats(16);
    tensor_set(x, v.data());
    compute_graph(be, g);
    const size_t first = be.asked;
    CHECK(first == g.nodes.size());
    compute_graph(be, g);
    compute_graph(be, g);
    CHECK(be.asked == first);  // the same stamp: not asked again
    std::vector<float> got(16);
    tensor_get(y, got.data());
    for (size_t i = 0; i < v.size(); ++i) CHECK(got[i] == v[i]);
    const uint64_t stamp = g.stamp;
    allocate_graph(be, g, arena);  // a new allocation: a new stamp, checked again
    CHECK(g.stamp != stamp);
    compute_graph(be, g);
    CHECK(be.asked == 2 * first);
}

TEST_CASE("set_rows writes each source row, converted, at the row its id names") {
    for (DType type : {DType::F32, DType::F16, DType::Q8_0}) {
        CAPTURE(dtype_name(type));
        const int64_t ne0 = 64, n_dst = 10, n_src = 3;
        const std::vector<float> init = random_floats(size_t(ne0 * n_dst));
        const std::vector<float> rows = random_floats(size_t(ne0 * n_src));
        const std::vector<int32_t> ids = {7, 2, 9};
        Context ctx;
        Tensor* dst = ctx.new_tensor_2d(type, ne0, n_dst);
        Tensor* src = ctx.new_tensor_2d(DType::F32, ne0, n_src);
        Tensor* idx = ctx.new_tensor_1d(DType::I32, n_src);
        for (Tensor* t : {dst, src, idx}) t->flags |= TENSOR_INPUT;
        Tensor* out = set_rows(ctx, dst, src, idx);
        CHECK(out->view_src == dst);
        Graph g = build_graph({out});
        auto backend = make_cpu_backend(2);
        auto arena = allocate_graph(*backend, g);
        const std::vector<uint8_t> init_bytes = encode(type, init, ne0);
        tensor_set(dst, init_bytes.data());
        tensor_set(src, rows.data());
        tensor_set(idx, ids.data());
        compute_graph(*backend, g);
        std::vector<uint8_t> got(init_bytes.size());
        tensor_get(dst, got.data());
        // Expected: the untouched rows as they were, the written rows as the dtype table converts them.
        std::vector<uint8_t> want = init_bytes;
        const size_t row = dtype_row_size(type, ne0);
        const std::vector<uint8_t> written = encode(type, rows, ne0);
        for (size_t i = 0; i < ids.size(); ++i)
            std::memcpy(want.data() + size_t(ids[i]) * row, written.data() + i * row, row);
        CHECK(got == want);
    }
}

// ---- FLASH_ATTN ---------------------------------------------------------------------------------

// Attention of q over a cache of `type` (K and V rows per position, heads side by side, as the KV
// cache lays them out) against softmax(K q * scale + mask) V in double over the dequantized cache.
TEST_CASE("flash_attn matches the double reference for every cache type, GQA group and mask") {
    struct Case {
        DType type_k, type_v;
        int64_t n_head, n_head_kv, T, n_kv;
    };
    const Case cases[] = {
        {DType::F32, DType::F32, 4, 4, 1, 37},    // MHA, decode
        {DType::F16, DType::F16, 8, 2, 5, 64},    // GQA, a batch of 5 new tokens
        {DType::Q8_0, DType::Q8_0, 6, 1, 3, 50},  // MQA
        {DType::Q4_0, DType::Q8_0, 4, 2, 1, 96},  // K and V of different types
        {DType::F16, DType::Q4_0, 4, 2, 7, 33},
    };
    const int64_t hd_k = 64, hd_v = 32;
    for (const Case& c : cases) {
        CAPTURE(dtype_name(c.type_k));
        CAPTURE(dtype_name(c.type_v));
        CAPTURE(c.n_head_kv);
        const int64_t n_slots = c.n_kv + 3;  // the cache is longer than the span attention reads
        Harness h;
        const std::vector<float> qv = random_floats(size_t(hd_k * c.n_head * c.T), -2.0f, 2.0f);
        const std::vector<float> kv = random_floats(size_t(hd_k * c.n_head_kv * n_slots), -2.0f, 2.0f);
        const std::vector<float> vv = random_floats(size_t(hd_v * c.n_head_kv * n_slots));
        // Causal over the last T positions, plus random holes (a window or ring leaves such gaps).
        std::vector<float> mask(size_t(c.n_kv * c.T));
        std::uniform_int_distribution<int> coin(0, 5);
        for (int64_t t = 0; t < c.T; ++t)
            for (int64_t j = 0; j < c.n_kv; ++j) {
                const bool visible = j <= c.n_kv - c.T + t && (coin(mf_test::rng()) != 0 || j == 0);
                mask[size_t(t * c.n_kv + j)] = visible ? 0.0f : -INFINITY;
            }
        Tensor* q = h.f32({hd_k, c.n_head, c.T}, qv);
        Tensor* kc = h.typed(c.type_k, {hd_k * c.n_head_kv, n_slots}, kv);
        Tensor* vc = h.typed(c.type_v, {hd_v * c.n_head_kv, n_slots}, vv);
        Tensor* m = h.f32({c.n_kv, c.T}, mask);
        Tensor* K = view_3d(h.ctx, kc, hd_k, c.n_kv, c.n_head_kv, kc->nb[1], dtype_row_size(c.type_k, hd_k), 0);
        Tensor* V = view_3d(h.ctx, vc, hd_v, c.n_kv, c.n_head_kv, vc->nb[1], dtype_row_size(c.type_v, hd_v), 0);
        const float sc = 1.0f / std::sqrt(float(hd_k));
        const std::vector<float> got = h.run(flash_attn(h.ctx, q, K, V, m, sc));

        const std::vector<float> kd = decode(c.type_k, encode(c.type_k, kv, hd_k * c.n_head_kv), hd_k * c.n_head_kv);
        const std::vector<float> vd = decode(c.type_v, encode(c.type_v, vv, hd_v * c.n_head_kv), hd_v * c.n_head_kv);
        std::vector<double> want(size_t(hd_v * c.n_head * c.T));
        const int64_t group = c.n_head / c.n_head_kv;
        for (int64_t t = 0; t < c.T; ++t)
            for (int64_t hq = 0; hq < c.n_head; ++hq) {
                const int64_t hk = hq / group;
                std::vector<double> s(size_t(c.n_kv));
                double mx = -INFINITY;
                for (int64_t j = 0; j < c.n_kv; ++j) {
                    double dot = 0;
                    for (int64_t i = 0; i < hd_k; ++i)
                        dot += double(qv[size_t(i + hd_k * (hq + c.n_head * t))]) *
                               kd[size_t(i + hd_k * hk + hd_k * c.n_head_kv * j)];
                    s[size_t(j)] = dot * sc + mask[size_t(t * c.n_kv + j)];
                    mx = std::max(mx, s[size_t(j)]);
                }
                double sum = 0;
                for (auto& x : s) sum += (x = std::exp(x - mx));
                for (int64_t i = 0; i < hd_v; ++i) {
                    double o = 0;
                    for (int64_t j = 0; j < c.n_kv; ++j)
                        o += s[size_t(j)] / sum * vd[size_t(i + hd_v * hk + hd_v * c.n_head_kv * j)];
                    want[size_t(i + hd_v * (hq + c.n_head * t))] = o;
                }
            }
        // The reference reads the same dequantized cache, so only f32 accumulation order differs.
        CHECK(rel_error(got.data(), want.data(), want.size()) < 1e-5);
    }
}

// A K row whose last values are kept apart in f16 (src4, a quantized MLA latent's roped part) is
// read as the row [k ; tail]: the same bits as K given whole in f32 holding those values, for
// flash_attn and attn_fused, one KV head (MLA) and two, V a prefix of K's rows or rows of its own.
TEST_CASE("flash_attn and attn_fused with K's tail apart give the bits of the whole K row in f32") {
    struct Case {
        DType type;
        int64_t hd, hd_r, n_head, n_head_kv, T, n_kv;
        bool v_in_k;
    };
    const Case cases[] = {
        {DType::Q8_0, 64, 16, 8, 1, 1, 70, true},   // decode over a latent: V is K's first 64 values
        {DType::Q4_0, 32, 8, 4, 1, 5, 40, true},    // the fixtures' 32 + 8, five new tokens
        {DType::Q8_0, 64, 32, 6, 2, 3, 50, false},  // two KV heads, V rows of their own
    };
    for (const Case& c : cases) {
        CAPTURE(dtype_name(c.type));
        CAPTURE(c.n_head_kv);
        const int64_t w = c.hd + c.hd_r, n_slots = c.n_kv + 2, hd_v = c.v_in_k ? c.hd : 32;
        const std::vector<float> qv = random_floats(size_t(w * c.n_head * c.T), -2.0f, 2.0f);
        const std::vector<float> kv = random_floats(size_t(c.hd * c.n_head_kv * n_slots), -2.0f, 2.0f);
        const std::vector<float> rv = random_floats(size_t(c.hd_r * c.n_head_kv * n_slots), -2.0f, 2.0f);
        const std::vector<float> vv = random_floats(size_t(hd_v * c.n_head_kv * n_slots));
        std::vector<float> mask(size_t(c.n_kv * c.T));
        for (int64_t t = 0; t < c.T; ++t)
            for (int64_t j = 0; j < c.n_kv; ++j)
                mask[size_t(t * c.n_kv + j)] = j <= c.n_kv - c.T + t ? 0.0f : -INFINITY;
        // The whole rows in f32: per position and head the dequantized k, then the f16 tail's values.
        const std::vector<float> kd = decode(c.type, encode(c.type, kv, c.hd), c.hd);
        const std::vector<float> rd = decode(DType::F16, encode(DType::F16, rv, c.hd_r), c.hd_r);
        std::vector<float> whole;
        for (int64_t r = 0; r < c.n_head_kv * n_slots; ++r) {
            whole.insert(whole.end(), kd.begin() + r * c.hd, kd.begin() + (r + 1) * c.hd);
            whole.insert(whole.end(), rd.begin() + r * c.hd_r, rd.begin() + (r + 1) * c.hd_r);
        }
        for (bool fused : {false, true}) {
            CAPTURE(fused);
            auto attend = [&](bool apart) {
                Harness h;
                Tensor* q = h.f32({w, c.n_head, c.T}, qv);
                Tensor* m = h.f32({c.n_kv, c.T}, mask);
                Tensor* kc = apart ? h.typed(c.type, {c.hd * c.n_head_kv, n_slots}, kv)
                                   : h.f32({w * c.n_head_kv, n_slots}, whole);
                const int64_t k_w = apart ? c.hd : w;
                Tensor* K = view_3d(h.ctx, kc, k_w, c.n_kv, c.n_head_kv, kc->nb[1], dtype_row_size(kc->type, k_w), 0);
                Tensor* V;
                if (c.v_in_k) {
                    V = view_3d(h.ctx, kc, c.hd, c.n_kv, 1, kc->nb[1], kc->nb[1] * n_slots, 0);
                } else {
                    Tensor* vc = h.typed(c.type, {hd_v * c.n_head_kv, n_slots}, vv);
                    V = view_3d(h.ctx, vc, hd_v, c.n_kv, c.n_head_kv, vc->nb[1], dtype_row_size(c.type, hd_v), 0);
                }
                Tensor* R = nullptr;
                if (apart) {
                    Tensor* rc = h.typed(DType::F16, {c.hd_r * c.n_head_kv, n_slots}, rv);
                    R = view_3d(h.ctx, rc, c.hd_r, c.n_kv, c.n_head_kv, rc->nb[1], size_t(c.hd_r) * 2, 0);
                }
                const float sc = 1.0f / std::sqrt(float(w));
                return h.run(fused ? attn_fused(h.ctx, q, K, V, m, sc, R) : flash_attn(h.ctx, q, K, V, m, sc, R));
            };
            // With V in K the whole-row run reads V as f32 values of the dequantized blocks: the same floats.
            const std::vector<float> got = attend(true), want = attend(false);
            REQUIRE(got.size() == want.size());
            CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("hadamard rotates each row by H S (orthonormal Hadamard times fixed signs); the inverse undoes it") {
    for (int64_t n : {2, 16, 64, 128, 256}) {
        CAPTURE(n);
        const int64_t rows = 5;
        const std::vector<float> x = random_floats(size_t(n * rows), -3.0f, 3.0f);
        Harness h;
        Tensor* a = h.f32({n, rows}, x);
        Tensor* once = hadamard(h.ctx, a);
        Tensor* back = hadamard(h.ctx, once, true);
        h.compute({once, back});
        const std::vector<float> got = h.read_f32(once), undone = h.read_f32(back);
        std::vector<double> want(size_t(n * rows));
        int flips = 0;
        for (int64_t j = 0; j < n; ++j) flips += hadamard_sign(uint32_t(j)) < 0;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < n; ++i) {
                double s = 0;
                for (int64_t j = 0; j < n; ++j)
                    s += ((__builtin_popcountll(uint64_t(i & j)) & 1) ? -1.0 : 1.0) * hadamard_sign(uint32_t(j)) *
                         x[size_t(r * n + j)];
                want[size_t(r * n + i)] = s / std::sqrt(double(n));
            }
        CHECK(rel_error(got.data(), want.data(), want.size()) < 1e-6);
        CHECK(rel_error(undone.data(), to_double(x).data(), x.size()) < 1e-6);
        if (n >= 16) CHECK((flips > 0 && flips < n));  // the signs are not all equal
    }
}
