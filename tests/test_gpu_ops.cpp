// The CUDA backend against the CPU backend (the reference): the same small graph, built twice on the
// same fresh random inputs, for every op and type the CUDA backend claims; and what it must refuse.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/graph.h"
#include "core/ops.h"
#include "cuda/cuda_backend.h"
#include "row_codec.h"
#include "test_util.h"

using namespace mf;
using mf_test::random_floats;

namespace {

// ---- host data ---------------------------------------------------------------------------------

// A leaf's type, shape and bytes; the same Input feeds both backends.
struct Input {
    DType type;
    int64_t ne[4];
    std::vector<uint8_t> bytes;
};

using mf_test::decode;
using mf_test::encode;

Input values(DType type, const std::vector<int64_t>& shape, const std::vector<float>& v) {
    Input in{type, {1, 1, 1, 1}, {}};
    int n = 0;
    for (int64_t d : shape) in.ne[n++] = d;
    REQUIRE(int64_t(v.size()) == in.ne[0] * in.ne[1] * in.ne[2] * in.ne[3]);
    in.bytes = encode(type, v, in.ne[0]);
    return in;
}

// Uniform in [-1, 1), stored as `type` (quantized with the dtype table's reference quantizer).
Input random(DType type, const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return values(type, shape, random_floats(size_t(n)));
}

Input ids(const std::vector<int64_t>& shape, const std::vector<int32_t>& v) {
    Input in{DType::I32, {1, 1, 1, 1}, {}};
    int n = 0;
    for (int64_t d : shape) in.ne[n++] = d;
    REQUIRE(int64_t(v.size()) == in.ne[0] * in.ne[1] * in.ne[2] * in.ne[3]);
    in.bytes.resize(v.size() * 4);
    std::memcpy(in.bytes.data(), v.data(), in.bytes.size());
    return in;
}

std::vector<int32_t> random_ids(size_t n, int32_t bound) {
    std::uniform_int_distribution<int32_t> d(0, bound - 1);
    std::vector<int32_t> v(n);
    for (auto& x : v) x = d(mf_test::rng());
    return v;
}

// ---- running one graph on a backend ----------------------------------------------------------------

// Records the op(s) under test on the leaves (one per Input, in order) and returns the result.
using Build = std::function<Tensor*(Context&, const std::vector<Tensor*>&)>;

Backend& cpu() {
    static std::unique_ptr<Backend> b = make_cpu_backend(2);
    return *b;
}

Backend& gpu() {
    static std::unique_ptr<Backend> b = make_cuda_backend();
    return *b;
}

// Builds, allocates, uploads and computes the graph on be; returns the result as f32 values. A
// result that writes into another tensor (cpy into a cache view) returns that whole tensor, so bytes
// the op must not touch are compared too.
std::vector<float> run(Backend& be, const std::vector<Input>& inputs, const Build& build) {
    Context ctx;
    std::vector<Tensor*> leaves;
    for (const Input& in : inputs) {
        Tensor* t = ctx.new_tensor(in.type, 4, in.ne);
        t->flags |= TENSOR_INPUT;
        leaves.push_back(t);
    }
    Tensor* out = build(ctx, leaves);
    Graph g = build_graph({out});
    auto arena = allocate_graph(be, g);
    for (size_t i = 0; i < leaves.size(); ++i) {
        REQUIRE(leaves[i]->nbytes() == inputs[i].bytes.size());
        tensor_set(leaves[i], inputs[i].bytes.data());
    }
    compute_graph(be, g);
    const Tensor* result = out->view_src ? out->view_src : out;
    REQUIRE(result->is_contiguous());
    std::vector<uint8_t> bytes(result->nbytes());
    tensor_get(result, bytes.data());
    return decode(result->type, bytes, result->ne[0]);
}

// Runs the graph on both backends and checks ||gpu - cpu|| / ||cpu|| <= tol.
void check_vs_cpu(const std::vector<Input>& inputs, const Build& build, double tol) {
    const std::vector<float> ref = run(cpu(), inputs, build);
    const std::vector<float> got = run(gpu(), inputs, build);
    REQUIRE(got.size() == ref.size());
    REQUIRE(!ref.empty());
    const std::vector<double> ref_d(ref.begin(), ref.end());
    const double err = mf_test::rel_error(got.data(), ref_d.data(), ref.size());
    INFO("relative error " << err << ", tolerance " << tol);
    CHECK(err <= tol);  // false for NaN, too
}

const DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                              DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool is_quant(DType t) { return dtype_traits(t).is_quantized; }
// K-quants: rows are whole 256-element super-blocks.
bool is_k_quant(DType t) { return dtype_traits(t).block_size == 256; }

}  // namespace

TEST_CASE("cuda_available is true on the GPU test machine") {
    std::string why;
    const bool ok = cuda_available(&why);
    INFO("why: " << why);
    CHECK(ok);
}

// Tolerances: F32/F16/BF16 weights multiply the same f32 activations on both backends and differ only
// in summation order and precision (the CPU sums f16/bf16 dots in double), ~1e-6. Quantized weights:
// both backends quantize the activations to the weight type's vec_dot_type (Q8_0, Q8_1 or Q8_K) with
// the same reference arithmetic and form the same integer block sums, so only the f32 scaling and
// accumulation of those sums differs (~1e-6); 1e-4 leaves room for a rounding tie going the other way
// in one activation quant, and a wrong quantizer or unpacking is off by 1e-3 or far more.
TEST_CASE("mul_mat matches the CPU for every weight type, aligned and unaligned rows, N = 1 and N > 1") {
    struct Case {
        int64_t K, M, N;
        const char* why;
    };
    // Rows of 32-element blocks (and the float types).
    const std::vector<Case> cases = {
        {256, 67, 1, "decode: one column; M not a multiple of the rows per CUDA block"},
        {256, 67, 6, "two column groups, the second partial"},
        {2048, 33, 1, "quant rows of 64 blocks: two full 16-byte staged chunks"},
        {1120, 17, 3, "35 blocks a row: Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 rows not 16-byte aligned, read directly"},
        {96, 9, 2, "fewer blocks than lanes"},
        {2080, 64, 1, "decode, a MoE router's shape: F32 takes a block a row with K split over its warps"},
        // The decode kernel gives each warp 1, 2 or 4 rows, as many as still leave 8 warps per SM on
        // the machine's SM count (an H100/H200: >= 2112 rows for 2, >= 4224 for 4).
        {4096 + 5 * 32, 4301, 1, "4 rows a warp (2 for Q8_0), a short last group; 2 staged chunks + a 5-block tail"},
        {2048, 2203, 5, "2 rows a warp; one staged chunk, two column groups"},
        {1024, 2203, 1, "decode with 2 rows a warp (16-bit weights: matvec_half_decode_kernel)"},
        {1120, 4301, 1, "4 rows a warp on unaligned rows: every block read directly"},
    };
    // Rows of 256-element super-blocks (the K-quants; four lanes per super-block, eight per warp step).
    const std::vector<Case> k_cases = {
        {256, 67, 1, "one super-block a row: one partial warp step"},
        {256, 67, 6, "two column groups, the second partial"},
        {768, 17, 3, "3 super-blocks: Q6_K rows (630 bytes) not 16-byte aligned, read directly"},
        {2048, 33, 1, "8 super-blocks: one full warp step, staged through shared memory for Q6_K"},
        {2560, 9, 5, "10 super-blocks: a full step and a partial one"},
    };
    for (DType type : kWeightTypes) {
        for (const Case& c : is_k_quant(type) ? k_cases : cases) {
            const std::string type_name = dtype_name(type);
            CAPTURE(type_name);
            CAPTURE(c.K);
            CAPTURE(c.M);
            CAPTURE(c.N);
            INFO(c.why);
            check_vs_cpu({random(type, {c.K, c.M}), random(DType::F32, {c.K, c.N})},
                         [](Context& ctx, const std::vector<Tensor*>& in) { return mul_mat(ctx, in[0], in[1]); },
                         is_quant(type) ? 1e-4 : 1e-5);
        }
        if (is_quant(type)) continue;
        // Odd K: the float kernel's one-element-per-lane path instead of 16-byte loads.
        const std::string type_name = dtype_name(type);
        CAPTURE(type_name);
        check_vs_cpu({random(type, {37, 11}), random(DType::F32, {37, 3})},
                     [](Context& ctx, const std::vector<Tensor*>& in) { return mul_mat(ctx, in[0], in[1]); }, 1e-5);
    }
}

namespace {

struct MatmulCase {
    int64_t K, M, N;
    const char* why;
};

// mul_mat of random weights of each type [K, M] by random f32 [K, N] on both backends, per case.
void check_mul_mats(std::initializer_list<DType> types, const std::vector<MatmulCase>& cases, double tol) {
    const auto product = [](Context& ctx, const std::vector<Tensor*>& in) { return mul_mat(ctx, in[0], in[1]); };
    for (DType type : types) {
        for (const MatmulCase& c : cases) {
            INFO(dtype_name(type) << " K " << c.K << " M " << c.M << " N " << c.N << ": " << c.why);
            check_vs_cpu({random(type, {c.K, c.M}), random(DType::F32, {c.K, c.N})}, product, tol);
        }
    }
}

}  // namespace

// From 16 activation columns on, MUL_MAT of the 32-element block types runs the tensor-core kernel
// (cuda/matmul): tiles of 64 weight rows x 64 columns (more than 64 columns: x 128), 128 values of K
// (4 blocks) per stage, copied in with cp.async one stage ahead, the weights in 8-byte pieces when K is
// a multiple of 128 and 4-byte ones otherwise. The shapes leave partial tiles in M and N and a
// partial stage in K, with either tile and either piece.
// Tolerance as for mul_mat: both backends form the same exact integer block sums from the same quantized
// activations, so only the f32 scaling and summation order differ (~1e-6); a wrong fragment layout or
// unpacking is off by far more than 1e-4.
TEST_CASE("mul_mat of 32-element block weights by 16 or more columns (the tensor-core kernel) matches the CPU") {
    const std::vector<MatmulCase> cases = {
        {128, 64, 16, "one stage, one full M tile, the fewest columns that take the kernel"},
        {4096, 200, 17, "32 stages; M and N tiles partial (200 = 3 * 64 + 8, 17)"},
        {320, 1000, 100, "10 blocks: two stages and a half one; M and N partial"},
        {4096, 64, 512, "prefill-sized N: 8 full column tiles"},
        {320, 200, 512, "partial stage and M tile with full column tiles"},
        {128, 1000, 16, "many weight tiles, one partial column tile"},
        {1024, 200, 130, "the 64 x 128 tile with 8-byte pieces, M and N partial"},
        {256, 72, 65, "the 64 x 128 tile for one column past 64"},
        {320, 130, 40, "the 64 x 64 tile with 4-byte pieces over two stages and a half"},
        {640, 8500, 520, "the 128 x 128 tile (335 blocks), 8-byte pieces, 5 stages, M and N partial"},
        {96, 8448, 520, "as many blocks but K % 128 != 0: Q4_1 / Q5_1 keep the 64 x 128 tile with 4-byte "
                        "pieces (the odd-block types take the matvec kernel)"},
        {96, 130, 40, "3 blocks: Q4_1 / Q5_1 take the kernel with one partial stage; odd-block Q4_0 / Q5_0 / "
                      "Q8_0 rows are not 4-byte aligned and take the matvec kernel"},
    };
    check_mul_mats({DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1}, cases, 1e-4);
}

// F16 / BF16 weights by 16 or more columns take the half-precision tensor-core kernel (cuda/matmul):
// the same 64 x 64 tiles, 64 values of K a stage, every activation split into two halves (hi + lo).
// Tolerance as for the float matvec: the products keep f32 activations' precision (bf16: to 2^-17 of
// x), so only summation order differs; a wrong fragment layout or a dropped lo half is off by far more.
TEST_CASE("mul_mat of F16 and BF16 weights by 16 or more columns (the tensor-core kernel) matches the CPU") {
    const std::vector<MatmulCase> cases = {
        {64, 64, 16, "one stage, one full tile, the fewest columns that take the kernel"},
        {2048, 200, 17, "32 stages; M and N tiles partial"},
        {200, 130, 100, "a partial last stage (200 = 3 * 64 + 8); M and N partial"},
        {1024, 64, 512, "prefill-sized N: 8 full column tiles"},
        {36, 70, 20, "K % 8 != 0: not 16-byte vectors of halves, the matvec kernel instead"},
    };
    check_mul_mats({DType::F16, DType::BF16}, cases, 1e-5);
}

// The tensor-core kernel keeps the scratch contract of the matvec kernel: Q5_0 reuses the Q8_0 copy of
// x that Q4_0's launch left, Q5_1 the Q8_1 copy of Q4_1's; Q4_1 and Q8_0 quantize again after a
// K-quant's matvec overwrote the scratch with Q8_K. (With a 2-D x of 16+ columns every 32-element
// block type takes this kernel, so a matvec-quantized x cannot reach it.) A stale or wrong-format
// copy would be off by far more than the mul_mat tolerance.
TEST_CASE("the tensor-core mul_mat reuses and leaves the quantized activation like the matvec kernel") {
    const DType chain[] = {DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q4_1, DType::Q5_1, DType::Q6_K, DType::Q8_0};
    std::vector<Input> inputs = {random(DType::F32, {512, 40})};
    for (DType t : chain) inputs.push_back(random(t, {512, 72}));
    check_vs_cpu(inputs,
                 [](Context& ctx, const std::vector<Tensor*>& in) {
                     Tensor* sum = mul_mat(ctx, in[1], in[0]);
                     for (size_t i = 2; i < in.size(); ++i) sum = add(ctx, sum, mul_mat(ctx, in[i], in[0]));
                     return sum;
                 },
                 1e-4);
}

// The F16 / BF16 tensor-core kernel writes x's hi / lo halves into the same scratch: a quantized
// mul_mat of the same x after it must quantize x again rather than read the halves as quants.
TEST_CASE("a quantized mul_mat after an F16 / BF16 tensor-core mul_mat of the same x quantizes x again") {
    for (DType half_type : {DType::F16, DType::BF16}) {
        const std::string type_name = dtype_name(half_type);
        CAPTURE(type_name);
        std::vector<Input> inputs = {random(DType::F32, {512, 40}), random(DType::Q4_0, {512, 72}),
                                     random(half_type, {512, 72})};
        check_vs_cpu(inputs,
                     [](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* sum = add(ctx, mul_mat(ctx, in[1], in[0]), mul_mat(ctx, in[2], in[0]));
                         return add(ctx, sum, mul_mat(ctx, in[1], in[0]));
                     },
                     1e-4);
    }
}

TEST_CASE("mul_mat broadcasts weights over dims 2 and 3 (GQA) and reads strided and permuted views") {
    for (DType type : kWeightTypes) {
        const std::string type_name = dtype_name(type);
        CAPTURE(type_name);
        const double tol = is_quant(type) ? 1e-4 : 1e-5;
        const int64_t K = is_k_quant(type) ? 256 : 64;  // one row of the type's largest block
        // w [K, 12, 2, 1] serves x [K, 3, 4, 2]: ratio 2 over dim 2, 2 over dim 3.
        check_vs_cpu({random(type, {K, 12, 2, 1}), random(DType::F32, {K, 3, 4, 2})},
                     [](Context& ctx, const std::vector<Tensor*>& in) { return mul_mat(ctx, in[0], in[1]); }, tol);
        // Activations as a view of every other K-wide half of wider rows, 4 bytes in: the base is
        // no longer 16-byte aligned, so float kernels take their scalar path.
        check_vs_cpu({random(type, {K, 10}), random(DType::F32, {2 * K + 1, 5})},
                     [K](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* x = view_2d(ctx, in[1], K, 5, in[1]->nb[1], sizeof(float));
                         return mul_mat(ctx, in[0], x);
                     },
                     tol);
        // KV-cache style: weights a window of a bigger cache [K, 16 positions, 2 heads], activations
        // q permuted from [K, heads 4, tokens 3] to [K, tokens, heads].
        check_vs_cpu({random(type, {K, 16, 2}), random(DType::F32, {K, 4, 3})},
                     [K](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* cache = in[0];
                         Tensor* k = view_3d(ctx, cache, K, 7, 2, cache->nb[1], cache->nb[2], cache->nb[1]);
                         Tensor* q = permute(ctx, in[1], 0, 2, 1, 3);
                         return mul_mat(ctx, k, q);
                     },
                     tol);
    }
}

TEST_CASE("get_rows returns the same dequantized rows for every weight type, per batch") {
    for (DType type : kWeightTypes) {
        const std::string type_name = dtype_name(type);
        CAPTURE(type_name);
        // Dequantization rounds after each f32 multiply and add on both backends (no FMA), in the same
        // order, so the rows are bit-identical. K-quant rows hold two super-blocks.
        const int64_t ne0 = is_k_quant(type) ? 512 : 64;
        check_vs_cpu({random(type, {ne0, 10, 2}), ids({3, 2}, random_ids(6, 10))},
                     [](Context& ctx, const std::vector<Tensor*>& in) { return get_rows(ctx, in[0], in[1]); }, 0.0);
    }
}

TEST_CASE("add and mul broadcast the second operand along every dimension; strided first operand") {
    // One f32 add or multiply per element on both backends: bit-identical.
    const std::vector<std::vector<int64_t>> b_shapes = {
        {32, 6, 3, 2}, {32, 1, 3, 1}, {1, 6, 1, 2}, {1, 1, 1, 1}, {16, 3, 1, 1}};
    for (bool is_add : {true, false}) {
        for (const auto& bs : b_shapes) {
            CAPTURE(is_add);
            CAPTURE(bs[0]);
            CAPTURE(bs[1]);
            check_vs_cpu({random(DType::F32, {32, 6, 3, 2}), random(DType::F32, bs)},
                         [is_add](Context& ctx, const std::vector<Tensor*>& in) {
                             return is_add ? add(ctx, in[0], in[1]) : mul(ctx, in[0], in[1]);
                         },
                         0.0);
        }
        check_vs_cpu({random(DType::F32, {6, 32}), random(DType::F32, {32, 1})},
                     [is_add](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* at = transpose(ctx, in[0]);
                         return is_add ? add(ctx, at, in[1]) : mul(ctx, at, in[1]);
                     },
                     0.0);
    }
}

TEST_CASE("scale, silu, gelu, swiglu and geglu") {
    // scale is one multiply (exact); the activations go through expf / tanhf, whose CUDA and glibc
    // versions differ by an ulp or two.
    check_vs_cpu({random(DType::F32, {100, 7, 3})},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return scale(ctx, in[0], -0.37f); }, 0.0);
    for (int which = 0; which < 4; ++which) {
        CAPTURE(which);
        std::vector<Input> inputs = {values(DType::F32, {100, 7, 3}, random_floats(2100, -6.0f, 6.0f))};
        if (which >= 2) inputs.push_back(random(DType::F32, {100, 7, 3}));  // the gate's second operand
        check_vs_cpu(inputs,
                     [which](Context& ctx, const std::vector<Tensor*>& in) {
                         switch (which) {
                             case 0: return silu(ctx, in[0]);
                             case 1: return gelu(ctx, in[0]);
                             case 2: return swiglu(ctx, in[0], in[1]);
                             default: return geglu(ctx, in[0], in[1]);
                         }
                     },
                     1e-5);
    }
    // A strided (transposed) source for the unary kernel.
    check_vs_cpu({random(DType::F32, {7, 100})},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return silu(ctx, transpose(ctx, in[0])); }, 1e-5);
}

TEST_CASE("element-wise kernels over decode-sized rows, odd sizes, broadcasts and unaligned views") {
    // The kernels walk elements, not rows: 16-byte vectors where a's rows are packed and aligned and
    // b is as wide as a or one element wide, one element at a time otherwise. Each case below lands
    // on one of the two paths; add and mul are one f32 operation (bit-identical), the gated ones go
    // through expf / tanhf (an ulp or two).
    struct Case {
        std::vector<int64_t> a, b;
        const char* why;
    };
    const std::vector<Case> cases = {
        {{14336, 1}, {14336, 1}, "decode FFN row, one row over the whole GPU, 16-byte path"},
        {{4096, 1}, {4096, 1}, "decode residual add"},
        {{4096, 3}, {4096, 1}, "norm weight broadcast over rows, 16-byte path"},
        {{1001, 3}, {1001, 3}, "odd row length: one element per step"},
        {{1001, 3, 2}, {1, 3, 1}, "scalar per row broadcast, odd rows"},
        {{64, 5, 3, 2}, {1, 1, 1, 1}, "one scalar for everything, 16-byte path with a broadcast b"},
        {{64, 5, 3, 2}, {32, 5, 1, 2}, "b half as wide as a: one element per step"},
        {{68, 7, 2}, {68, 1, 2}, "rows of 68 floats: 16-byte path across rows"},
    };
    for (const Case& c : cases) {
        INFO(c.why);
        CAPTURE(c.a[0]);
        CAPTURE(c.b[0]);
        for (int which = 0; which < 4; ++which) {
            CAPTURE(which);
            const bool gated = which >= 2;
            if (gated && c.a != c.b) continue;  // swiglu and geglu take equal shapes
            check_vs_cpu({values(DType::F32, c.a, random_floats(size_t(std::accumulate(c.a.begin(), c.a.end(),
                                                                                      int64_t(1), std::multiplies<>())),
                                                                 -6.0f, 6.0f)),
                          random(DType::F32, c.b)},
                         [which](Context& ctx, const std::vector<Tensor*>& in) {
                             switch (which) {
                                 case 0: return add(ctx, in[0], in[1]);
                                 case 1: return mul(ctx, in[0], in[1]);
                                 case 2: return swiglu(ctx, in[0], in[1]);
                                 default: return geglu(ctx, in[0], in[1]);
                             }
                         },
                         gated ? 1e-5 : 0.0);
        }
    }
    // Views 4 bytes into a wider row (unaligned: one element per step) and a transposed a (strided
    // elements) against a packed b.
    for (bool is_add : {true, false}) {
        CAPTURE(is_add);
        check_vs_cpu({random(DType::F32, {4097, 2}), random(DType::F32, {4096, 2})},
                     [is_add](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* a = view_2d(ctx, in[0], 4096, 2, in[0]->nb[1], sizeof(float));
                         return is_add ? add(ctx, a, in[1]) : mul(ctx, a, in[1]);
                     },
                     0.0);
        check_vs_cpu({random(DType::F32, {4096, 2}), random(DType::F32, {4096, 2})},
                     [is_add](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* b = view_2d(ctx, in[1], 4092, 2, in[1]->nb[1], 4 * sizeof(float));
                         Tensor* a = view_2d(ctx, in[0], 4092, 2, in[0]->nb[1], 0);
                         return is_add ? add(ctx, a, b) : mul(ctx, a, b);
                     },
                     0.0);
        check_vs_cpu({random(DType::F32, {3, 4096}), random(DType::F32, {3})},
                     [is_add](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* at = transpose(ctx, in[0]);  // [4096, 3], elements 12 bytes apart
                         Tensor* b = view_2d(ctx, in[1], 1, 3, sizeof(float), 0);
                         return is_add ? add(ctx, at, b) : mul(ctx, at, b);
                     },
                     0.0);
    }
    // Unary kernels on both paths: a decode row, an odd size, an unaligned view.
    check_vs_cpu({random(DType::F32, {14336})},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return scale(ctx, in[0], 0.731f); }, 0.0);
    check_vs_cpu({values(DType::F32, {14336}, random_floats(14336, -6.0f, 6.0f))},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return silu(ctx, in[0]); }, 1e-5);
    check_vs_cpu({values(DType::F32, {1001, 3}, random_floats(3003, -6.0f, 6.0f))},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return gelu(ctx, in[0]); }, 1e-5);
    check_vs_cpu({random(DType::F32, {4097, 2})},
                 [](Context& ctx, const std::vector<Tensor*>& in) {
                     return scale(ctx, view_2d(ctx, in[0], 4096, 2, in[0]->nb[1], sizeof(float)), -2.5f);
                 },
                 0.0);
}

TEST_CASE("one quantized activation serves consecutive matmuls of the same input, and only those") {
    // The backend quantizes x once for consecutive quantized MUL_MATs that read the same x with the
    // same activation format (q, k, v; gate, up). Q4_0 and Q5_0 share Q8_0, Q4_1 needs Q8_1, the
    // K-quants Q8_K: the chain below switches format and comes back, so a kept copy of the wrong
    // format would show. Tolerance as for mul_mat.
    const DType chain[] = {DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q6_K, DType::Q4_1, DType::Q8_0};
    std::vector<Input> inputs = {random(DType::F32, {512, 2})};
    for (DType t : chain) inputs.push_back(random(t, {512, 40}));
    check_vs_cpu(inputs,
                 [](Context& ctx, const std::vector<Tensor*>& in) {
                     Tensor* sum = mul_mat(ctx, in[1], in[0]);
                     for (size_t i = 2; i < in.size(); ++i) sum = add(ctx, sum, mul_mat(ctx, in[i], in[0]));
                     return sum;
                 },
                 1e-4);
    // A node that writes into x between two matmuls of x (same pointer, same shape) makes the second
    // quantize again: reusing the first copy would give w.x twice instead of w.x + w.z.
    for (DType t : {DType::Q4_0, DType::Q4_K}) {
        const std::string type_name = dtype_name(t);
        CAPTURE(type_name);
        check_vs_cpu({random(DType::F32, {256, 3}), random(DType::F32, {256, 3}), random(t, {256, 24})},
                     [](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* y1 = mul_mat(ctx, in[2], in[0]);
                         Tensor* x_overwritten = cpy(ctx, in[1], in[0]);
                         return add(ctx, y1, mul_mat(ctx, in[2], x_overwritten));
                     },
                     1e-4);
    }
}

TEST_CASE("rms_norm on wide, odd and strided rows") {
    // Sums of squares in different order and precision (the CPU sums in double): ~1e-7.
    const float eps = 1e-6f;
    check_vs_cpu({random(DType::F32, {4096, 3})},
                 [eps](Context& ctx, const std::vector<Tensor*>& in) { return rms_norm(ctx, in[0], eps); }, 1e-5);
    check_vs_cpu({random(DType::F32, {100, 7, 2})},
                 [eps](Context& ctx, const std::vector<Tensor*>& in) { return rms_norm(ctx, in[0], eps); }, 1e-5);
    check_vs_cpu({random(DType::F32, {128, 6})},
                 [eps](Context& ctx, const std::vector<Tensor*>& in) {
                     return rms_norm(ctx, view_2d(ctx, in[0], 100, 6, in[0]->nb[1], 8), eps);
                 },
                 1e-5);
}

TEST_CASE("rope, normal and NeoX, full and partial rotation, on a strided view of fused qkv") {
    // Both backends take the angles in double and round cos/sin to f32, and the rotation is unfused
    // f32 arithmetic on both; what remains is an ulp of libm's pow/cos/sin in double.
    const int64_t head_dim = 64, n_head = 4, n_tokens = 5;
    for (RopeMode mode : {ROPE_NORMAL, ROPE_NEOX}) {
        for (int n_dims : {64, 32}) {
            CAPTURE(int(mode));
            CAPTURE(n_dims);
            const Input pos = ids({n_tokens}, random_ids(size_t(n_tokens), 8192));
            check_vs_cpu({random(DType::F32, {head_dim, n_head, n_tokens}), pos},
                         [=](Context& ctx, const std::vector<Tensor*>& in) {
                             return rope(ctx, in[0], in[1], n_dims, mode, 10000.0f, 1.0f);
                         },
                         1e-5);
            // q is the first n_head heads of rows holding q, k and v (3 * n_head heads per token).
            check_vs_cpu({random(DType::F32, {head_dim * n_head * 3, n_tokens}), pos},
                         [=](Context& ctx, const std::vector<Tensor*>& in) {
                             Tensor* q = view_3d(ctx, in[0], head_dim, n_head, n_tokens, head_dim * sizeof(float),
                                                 in[0]->nb[1], 0);
                             return rope(ctx, q, in[1], n_dims, mode, 500000.0f, 0.25f);
                         },
                         1e-5);
            // Llama 3.1-style frequency factors divide each pair's angle.
            const Input factors = values(DType::F32, {n_dims / 2}, random_floats(size_t(n_dims / 2), 1.0f, 8.0f));
            check_vs_cpu({random(DType::F32, {head_dim, n_head, n_tokens}), pos, factors},
                         [=](Context& ctx, const std::vector<Tensor*>& in) {
                             return rope(ctx, in[0], in[1], n_dims, mode, 500000.0f, 1.0f, in[2]);
                         },
                         1e-5);
        }
    }
}

TEST_CASE("soft_max with and without a mask broadcast over heads; a fully masked row gives zeros") {
    // expf differs by an ulp between CUDA and glibc; the sums by order and precision.
    check_vs_cpu({values(DType::F32, {37, 5, 4}, random_floats(37 * 5 * 4, -8.0f, 8.0f))},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return soft_max(ctx, in[0], nullptr, 0.125f); },
                 1e-5);
    // Causal mask [37, 6, 2]: row i sees positions <= i + 30; row 5 of head group 1 is fully masked.
    std::vector<float> mask(37 * 6 * 2);
    for (int64_t h = 0; h < 2; ++h)
        for (int64_t i = 0; i < 6; ++i)
            for (int64_t j = 0; j < 37; ++j) {
                const bool masked = j > i + 30 || (h == 1 && i == 4);
                mask[size_t((h * 6 + i) * 37 + j)] = masked ? -INFINITY : 0.0f;
            }
    check_vs_cpu({random(DType::F32, {37, 5, 4}), values(DType::F32, {37, 6, 2}, mask)},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return soft_max(ctx, in[0], in[1], 0.5f); }, 1e-5);
}

TEST_CASE("cpy converts between f32, f16 and bf16 with any strides, bit-identically") {
    // Every conversion is one round-to-nearest-even on both backends: bit-identical.
    const DType floats[] = {DType::F32, DType::F16, DType::BF16};
    for (DType from : floats) {
        for (DType to : floats) {
            const std::string from_name = dtype_name(from);
            CAPTURE(from_name);
            const std::string to_name = dtype_name(to);
            CAPTURE(to_name);
            check_vs_cpu({random(from, {40, 6, 3})},
                         [to](Context& ctx, const std::vector<Tensor*>& in) { return cast(ctx, in[0], to); }, 0.0);
        }
    }
    // cont of a permuted view.
    check_vs_cpu({random(DType::F32, {8, 6, 5, 3})},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return cont(ctx, permute(ctx, in[0], 2, 0, 1, 3)); },
                 0.0);
    // V-cache store: 3 tokens of 64 values into columns 9..11 of an f16 cache laid out [n_ctx 16, 64].
    check_vs_cpu({random(DType::F32, {64, 3}), random(DType::F16, {16, 64})},
                 [](Context& ctx, const std::vector<Tensor*>& in) {
                     Tensor* slot = view_2d(ctx, in[1], 3, 64, in[1]->nb[1], 9 * sizeof(uint16_t));
                     return cpy(ctx, in[0], transpose(ctx, slot));
                 },
                 0.0);
    // Different row lengths: row-major element order is kept.
    check_vs_cpu({random(DType::F32, {6, 8}), random(DType::F16, {16, 3})},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return cpy(ctx, in[0], in[1]); }, 0.0);
}

TEST_CASE("set_rows writes rows at the positions its ids name, converting like the CPU") {
    // Whole destination compared, so rows the op must not touch are checked too. One rounding: exact.
    for (DType to : {DType::F32, DType::F16, DType::BF16}) {
        const std::string to_name = dtype_name(to);
        CAPTURE(to_name);
        check_vs_cpu({random(to, {48, 20}), random(DType::F32, {48, 4}), ids({4}, {17, 3, 0, 9})},
                     [](Context& ctx, const std::vector<Tensor*>& in) { return set_rows(ctx, in[0], in[1], in[2]); },
                     0.0);
    }
    // One-element rows: the transposed V-cache store the session builds.
    check_vs_cpu({random(DType::F16, {1, 64}), random(DType::F32, {1, 6}), ids({6}, {5, 21, 37, 53, 2, 60})},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return set_rows(ctx, in[0], in[1], in[2]); },
                 0.0);
}

TEST_CASE("cpy quantizes f32 into q8_0 and q4_0 exactly as the CPU's reference quantizer") {
    for (DType to : {DType::Q8_0, DType::Q4_0}) {
        const std::string to_name = dtype_name(to);
        CAPTURE(to_name);
        // The same scale, reciprocal and rounding in f32 on both: bit-identical blocks. A block of zeros
        // checks the zero-scale branch.
        std::vector<float> x = random_floats(128 * 6);
        for (int i = 0; i < 32; ++i) x[size_t(64 + i)] = 0.0f;
        check_vs_cpu({values(DType::F32, {128, 6}, x)},
                     [to](Context& ctx, const std::vector<Tensor*>& in) { return cast(ctx, in[0], to); }, 0.0);
        // K-cache store: 3 token rows into rows 4..6 of a [64, 10] quantized cache.
        check_vs_cpu({random(DType::F32, {64, 3}), random(to, {64, 10})},
                     [](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* slot = view_2d(ctx, in[1], 64, 3, in[1]->nb[1], 4 * in[1]->nb[1]);
                         return cpy(ctx, in[0], slot);
                     },
                     0.0);
        // From a transposed (strided) f32 source into rows of another length.
        check_vs_cpu({random(DType::F32, {6, 64}), random(to, {32, 12})},
                     [](Context& ctx, const std::vector<Tensor*>& in) {
                         return cpy(ctx, transpose(ctx, in[0]), in[1]);
                     },
                     0.0);
    }
}

TEST_CASE("concat joins along dims 0, 1 and 2") {
    for (int dim = 0; dim < 3; ++dim) {
        CAPTURE(dim);
        int64_t a_ne[3] = {16, 5, 3}, b_ne[3] = {16, 5, 3};
        b_ne[dim] = 7;
        check_vs_cpu({random(DType::F32, {a_ne[0], a_ne[1], a_ne[2]}), random(DType::F32, {b_ne[0], b_ne[1], b_ne[2]})},
                     [dim](Context& ctx, const std::vector<Tensor*>& in) { return concat(ctx, in[0], in[1], dim); },
                     0.0);
    }
}

TEST_CASE("a norm -> matmul -> swiglu -> matmul -> residual block with quantized weights matches the CPU") {
    // The second matmul requantizes activations the two backends computed ~1e-7 apart; now and then
    // (a few percent of runs) that moves one activation quant across a rounding boundary, a one-step
    // change that shifts its column by ~1e-3 relative. A wrong kernel is off by O(1), so 3e-3 still
    // catches it.
    const int64_t n_embd = 256, n_ff = 512, n_tokens = 3;
    const DType pairs[][2] = {{DType::Q4_0, DType::Q8_0}, {DType::Q4_1, DType::Q5_0}, {DType::Q5_1, DType::Q4_K},
                              {DType::Q5_K, DType::Q6_K}};
    for (const auto& pair : pairs) {
        const DType up_type = pair[0], down_type = pair[1];
        const std::string up_type_name = dtype_name(up_type);
        CAPTURE(up_type_name);
        const std::string down_type_name = dtype_name(down_type);
        CAPTURE(down_type_name);
        check_vs_cpu({random(DType::F32, {n_embd, n_tokens}), random(DType::F32, {n_embd}),
                      random(up_type, {n_embd, n_ff}), random(up_type, {n_embd, n_ff}),
                      random(down_type, {n_ff, n_embd})},
                     [](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* x = in[0];
                         Tensor* h = mul(ctx, rms_norm(ctx, x, 1e-5f), in[1]);
                         Tensor* act = swiglu(ctx, mul_mat(ctx, in[2], h), mul_mat(ctx, in[3], h));
                         return add(ctx, x, mul_mat(ctx, in[4], act));
                     },
                     3e-3);
    }
}

// A SWIGLU read only by the next node, a MUL_MAT of 32-element block weights, is not launched: that
// MUL_MAT quantizes silu(gate) * up from gate and up (CudaBackend::run_nodes), also when they are views
// of one stacked gate_up product, for the matvec (N = 1) and the tensor-core kernel (N = 40). A SWIGLU
// read twice is launched as before. Tolerance as the block test above: requantization boundaries.
TEST_CASE("a swiglu read only by a quantized mul_mat is fused into its activation quantization") {
    const int64_t n_embd = 256, n_ff = 512;
    for (int64_t n_tokens : {int64_t(1), int64_t(40)}) {
        for (DType down_type : {DType::Q4_0, DType::Q4_1}) {
            CAPTURE(n_tokens);
            const std::string down_type_name = dtype_name(down_type);
            CAPTURE(down_type_name);
            const std::vector<Input> inputs = {random(DType::F32, {n_embd, n_tokens}), random(DType::Q8_0, {n_embd, 2 * n_ff}),
                                               random(down_type, {n_ff, n_embd}), random(down_type, {n_ff, n_embd})};
            auto gated = [n_ff](Context& ctx, const std::vector<Tensor*>& in) {
                Tensor* gu = mul_mat(ctx, in[1], in[0]);  // [2 n_ff, T]: gate rows, then up rows
                Tensor* g = view_2d(ctx, gu, n_ff, gu->ne[1], gu->nb[1], 0);
                Tensor* u = view_2d(ctx, gu, n_ff, gu->ne[1], gu->nb[1], size_t(n_ff) * sizeof(float));
                return swiglu(ctx, g, u);
            };
            // Every input must be in the graph (the harness uploads each): the fused case reads three.
            check_vs_cpu({inputs.begin(), inputs.begin() + 3},
                         [&](Context& ctx, const std::vector<Tensor*>& in) { return mul_mat(ctx, in[2], gated(ctx, in)); },
                         3e-3);
            check_vs_cpu(inputs,
                         [&](Context& ctx, const std::vector<Tensor*>& in) {
                             Tensor* act = gated(ctx, in);  // read by two matmuls: launched
                             return add(ctx, mul_mat(ctx, in[2], act), mul_mat(ctx, in[3], act));
                         },
                         3e-3);
        }
    }
}

// An RMS_NORM times its weight row is one launch (CudaBackend::norm_fusion); when a MUL_MAT of
// 32-element block weights is the only reader, that MUL_MAT quantizes rms_norm(x) * w straight from x,
// for the matvec (N = 1) and the tensor-core kernel (N = 40), x a strided view or not. Q4_K (a 256-element
// activation kind) and F16 keep the weighted norm's launch, as does a product read twice or the graph's
// output; a norm read twice is launched as before. Tolerance as the block test above: requantization
// boundaries.
TEST_CASE("an rms_norm times its weight is one launch, fused into a quantized mul_mat's activations") {
    const int64_t n_embd = 256, n_out = 96;
    for (int64_t n_tokens : {int64_t(1), int64_t(40)}) {
        for (DType type : {DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::F16}) {
            for (bool strided : {false, true}) {
                CAPTURE(n_tokens);
                CAPTURE(strided);
                const std::string type_name = dtype_name(type);
                CAPTURE(type_name);
                const std::vector<Input> inputs = {random(DType::F32, {n_embd + (strided ? 64 : 0), n_tokens}),
                                                   random(DType::F32, {n_embd}), random(type, {n_embd, n_out}),
                                                   random(type, {n_embd, n_out})};
                auto normed = [strided](Context& ctx, const std::vector<Tensor*>& in) {
                    Tensor* x = strided ? view_2d(ctx, in[0], n_embd, in[0]->ne[1], in[0]->nb[1], 32 * sizeof(float))
                                        : in[0];
                    return mul(ctx, rms_norm(ctx, x, 1e-5f), in[1]);
                };
                check_vs_cpu({inputs.begin(), inputs.begin() + 3},
                             [&](Context& ctx, const std::vector<Tensor*>& in) {
                                 return mul_mat(ctx, in[2], normed(ctx, in));
                             },
                             3e-3);
                check_vs_cpu(inputs,
                             [&](Context& ctx, const std::vector<Tensor*>& in) {
                                 Tensor* h = normed(ctx, in);  // read by two matmuls: written
                                 return add(ctx, mul_mat(ctx, in[2], h), mul_mat(ctx, in[3], h));
                             },
                             3e-3);
            }
            check_vs_cpu({random(DType::F32, {n_embd, n_tokens}), random(DType::F32, {n_embd})},
                         [](Context& ctx, const std::vector<Tensor*>& in) {
                             return mul(ctx, rms_norm(ctx, in[0], 1e-5f), in[1]);  // the graph's output
                         },
                         1e-5);
            // x computed in the graph and read only by the norm: the planner may place the product over
            // x's memory, which the one-launch form must see (it then runs unfused, or in place).
            check_vs_cpu({random(DType::F32, {n_embd, n_tokens}), random(DType::F32, {n_embd}),
                          random(DType::F32, {n_embd, 2 * n_tokens})},
                         [n_tokens](Context& ctx, const std::vector<Tensor*>& in) {
                             Tensor* wide = scale(ctx, in[2], 0.5f);  // freed before the product is placed
                             Tensor* x = add(ctx, in[0], view_2d(ctx, wide, n_embd, n_tokens, wide->nb[1], 0));
                             return mul(ctx, rms_norm(ctx, x, 1e-5f), in[1]);
                         },
                         1e-5);
            // The norm itself read twice: launched as before.
            check_vs_cpu({random(DType::F32, {n_embd, n_tokens}), random(DType::F32, {n_embd}),
                          random(DType::Q4_0, {n_embd, n_out})},
                         [](Context& ctx, const std::vector<Tensor*>& in) {
                             Tensor* n = rms_norm(ctx, in[0], 1e-5f);
                             return concat(ctx, mul_mat(ctx, in[2], mul(ctx, n, in[1])), n, 0);
                         },
                         3e-3);
        }
    }
}

// The fusions (RMS_NORM times its weight, that product and a SWIGLU quantized by the matmul that reads
// them, a residual ADD stored by the matvec) round as the kernels they replace: a llama-shaped block
// gives the same bits on a backend made with all three switched off (MINFER_CUDA_FUSE_NORM=0,
// MINFER_CUDA_FUSE_SWIGLU=0, MINFER_CUDA_FUSE_ADD=0), three times over (a repeated graph signature is
// replayed from its captured CUDA graph).
TEST_CASE("the norm, swiglu and residual fusions give the unfused kernels' bits") {
    setenv("MINFER_CUDA_FUSE_NORM", "0", 1);
    setenv("MINFER_CUDA_FUSE_SWIGLU", "0", 1);
    setenv("MINFER_CUDA_FUSE_ADD", "0", 1);
    std::unique_ptr<Backend> unfused = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_NORM");
    unsetenv("MINFER_CUDA_FUSE_SWIGLU");
    unsetenv("MINFER_CUDA_FUSE_ADD");
    const int64_t n_embd = 256, n_ff = 512;
    for (int64_t n_tokens : {int64_t(1), int64_t(40)}) {
        for (DType type : {DType::Q4_0, DType::Q4_1}) {
            CAPTURE(n_tokens);
            const std::string type_name = dtype_name(type);
            CAPTURE(type_name);
            const std::vector<Input> inputs = {random(DType::F32, {n_embd, n_tokens}), random(DType::F32, {n_embd}),
                                               random(type, {n_embd, 3 * n_embd}), random(DType::F32, {n_embd}),
                                               random(type, {n_embd, 2 * n_ff}), random(type, {n_ff, n_embd}),
                                               random(DType::F32, {n_embd, n_embd})};
            const Build block = [](Context& ctx, const std::vector<Tensor*>& in) {
                Tensor* x = in[0];
                Tensor* qkv = mul_mat(ctx, in[2], mul(ctx, rms_norm(ctx, x, 1e-5f), in[1]));
                x = add(ctx, x, view_2d(ctx, qkv, n_embd, qkv->ne[1], qkv->nb[1], 0));
                // The FFN's normed x is also read in f32 (as a MoE router reads it): written and
                // quantized by one launch.
                Tensor* h = mul(ctx, rms_norm(ctx, x, 1e-5f), in[3]);
                Tensor* gu = mul_mat(ctx, in[4], h);
                Tensor* g = view_2d(ctx, gu, n_ff, gu->ne[1], gu->nb[1], 0);
                Tensor* u = view_2d(ctx, gu, n_ff, gu->ne[1], gu->nb[1], size_t(n_ff) * sizeof(float));
                return add(ctx, add(ctx, x, mul_mat(ctx, in[5], swiglu(ctx, g, u))), mul_mat(ctx, in[6], h));
            };
            const std::vector<float> want = run(*unfused, inputs, block);
            for (int rep = 0; rep < 3; ++rep) {
                CAPTURE(rep);
                CHECK(run(gpu(), inputs, block) == want);
            }
        }
    }
}

// A MUL_MAT of block weights on the matvec path (N < 16) read only by an ADD stores dot + r itself
// (CudaBackend::add_fusable), the product on either side of the ADD, for the legacy and the K-quant
// kernels: 96 rows (a row a warp), 4301 (four rows a warp, the last group short) and activations with
// a batch dimension; each against the CPU and bit for bit against a backend made with
// MINFER_CUDA_FUSE_ADD=0. N = 40, a product read twice and a broadcast addend are launched as before.
TEST_CASE("a residual add of a quantized matvec's product is stored by the matvec") {
    setenv("MINFER_CUDA_FUSE_ADD", "0", 1);
    std::unique_ptr<Backend> unfused = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_ADD");
    struct Case {
        DType type;
        int64_t M, n_tokens, batch;
    };
    const Case cases[] = {{DType::Q4_0, 96, 1, 1},   {DType::Q8_0, 96, 3, 1},   {DType::Q4_K, 96, 1, 1},
                          {DType::Q6_K, 96, 3, 1},   {DType::Q4_0, 4301, 1, 1}, {DType::Q4_0, 4301, 3, 1},
                          {DType::Q4_K, 4301, 3, 1}, {DType::Q4_0, 96, 2, 3},   {DType::Q6_K, 96, 1, 3},
                          {DType::Q4_0, 96, 40, 1},  {DType::Q4_K, 96, 40, 1}};
    const int64_t K = 256;
    for (const Case& c : cases) {
        const std::string type_name = dtype_name(c.type);
        CAPTURE(type_name);
        CAPTURE(c.M);
        CAPTURE(c.n_tokens);
        CAPTURE(c.batch);
        const std::vector<Input> inputs = {random(c.type, {K, c.M}), random(DType::F32, {K, c.n_tokens, c.batch}),
                                           random(DType::F32, {c.M, c.n_tokens, c.batch})};
        const Build right = [](Context& ctx, const std::vector<Tensor*>& in) {
            return add(ctx, in[2], mul_mat(ctx, in[0], in[1]));
        };
        const Build left = [](Context& ctx, const std::vector<Tensor*>& in) {
            return add(ctx, mul_mat(ctx, in[0], in[1]), in[2]);
        };
        for (const Build& build : {right, left}) {
            check_vs_cpu(inputs, build, 1e-4);
            CHECK(run(gpu(), inputs, build) == run(*unfused, inputs, build));
        }
        check_vs_cpu(inputs,
                     [](Context& ctx, const std::vector<Tensor*>& in) {
                         Tensor* y = mul_mat(ctx, in[0], in[1]);  // read twice: launched
                         return mul(ctx, add(ctx, in[2], y), y);
                     },
                     1e-4);
        if (c.n_tokens > 1) {  // with one token [M] is the product's shape, not a broadcast
            check_vs_cpu({inputs[0], inputs[1], random(DType::F32, {c.M})},
                         [](Context& ctx, const std::vector<Tensor*>& in) {
                             return add(ctx, mul_mat(ctx, in[0], in[1]), in[2]);  // broadcast: launched
                         },
                         1e-4);
        }
    }
}

// A decode MUL_MAT of 32-element block weights over rows of at most 512 (MLA's per-head W_UK and W_UV:
// K = 128 and 512, one column, 16 heads as the batch) quantizes x inside the matvec instead of
// launching the quantizer: the same bits as a backend made with MINFER_CUDA_FUSE_QUANT=0, for every
// legacy type, strided and permuted x, a residual add stored by the matvec, and two products of one x
// (the scratch is not taken to hold it afterwards). cuda_quantized_inside counts the fused products.
TEST_CASE("a decode matvec over rows of at most 512 quantizes x itself, to the quantizer's bits") {
    setenv("MINFER_CUDA_FUSE_QUANT", "0", 1);
    std::unique_ptr<Backend> unfused = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_QUANT");
    struct Case {
        int64_t K, M, heads;
    };
    const Case cases[] = {{32, 67, 1}, {96, 9, 3}, {128, 512, 16}, {512, 128, 16}, {480, 4301, 1}};
    for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1}) {
        for (const Case& c : cases) {
            const std::string type_name = dtype_name(type);
            CAPTURE(type_name);
            CAPTURE(c.K);
            CAPTURE(c.M);
            CAPTURE(c.heads);
            // x as MLA's q_nope: the first K of each head's wider row ([K + 64, heads, 1]), permuted
            // to [K, 1, heads]; then a residual add, then a second weight over the same x.
            const std::vector<Input> inputs = {random(type, {c.K, c.M, c.heads}), random(DType::F32, {c.K + 64, c.heads}),
                                               random(DType::F32, {c.M, 1, c.heads}), random(type, {c.K, c.M, c.heads})};
            const Build build = [&c](Context& ctx, const std::vector<Tensor*>& in) {
                Tensor* q = view_3d(ctx, in[1], c.K, c.heads, 1, in[1]->nb[1], in[1]->nb[1] * size_t(c.heads), 0);
                Tensor* x = permute(ctx, q, 0, 2, 1, 3);
                Tensor* y = add(ctx, in[2], mul_mat(ctx, in[0], x));
                return add(ctx, mul_mat(ctx, in[3], x), y);
            };
            check_vs_cpu(inputs, build, 1e-4);
            const std::vector<float> want = run(*unfused, inputs, build);
            CHECK(cuda_quantized_inside(*unfused) == 0);
            CHECK(run(gpu(), inputs, build) == want);
            CHECK(cuda_quantized_inside(gpu()) == 2);
        }
    }
    // Not taken: more than one column, rows over 512, K-quant weights; the scratch path as before.
    const Build product = [](Context& ctx, const std::vector<Tensor*>& in) { return mul_mat(ctx, in[0], in[1]); };
    for (const auto& [type, K, N] : {std::tuple{DType::Q4_0, 128, 2}, std::tuple{DType::Q4_0, 544, 1},
                                     std::tuple{DType::Q4_K, 256, 1}}) {
        CAPTURE(K);
        CAPTURE(N);
        check_vs_cpu({random(type, {K, 40}), random(DType::F32, {K, N})}, product, 1e-4);
        CHECK(cuda_quantized_inside(gpu()) == 0);
    }
}

// Backend::last_graph_report (`minfer bench --busy`): once a repeated graph is captured, the report
// counts the captured kernels and the most of them on one chain of dependencies. Here one SCALE on the
// second stream (TENSOR_SIDE; first in node order, so it forks before anything is queued), five SCALEs
// in a row beside it, then the ADD of both: 7 kernels, of which 6 wait one after another (7 if the side
// SCALE ran on the main stream).
TEST_CASE("the report of a captured step counts its kernels and its longest chain of dependencies") {
    if (const char* graphs = std::getenv("MINFER_CUDA_GRAPHS"); graphs && std::string(graphs) == "0") {
        MESSAGE("MINFER_CUDA_GRAPHS=0: nothing is captured, nothing to report");
        return;
    }
    std::unique_ptr<Backend> be = make_cuda_backend();
    const Input xs = random(DType::F32, {4096}), ys = random(DType::F32, {4096});
    Context ctx;
    Tensor* x = ctx.new_tensor(DType::F32, 4, xs.ne);
    Tensor* y = ctx.new_tensor(DType::F32, 4, ys.ne);
    x->flags |= TENSOR_INPUT;
    y->flags |= TENSOR_INPUT;
    Tensor* a = x;
    for (int i = 0; i < 5; ++i) a = scale(ctx, a, 0.5f);
    Tensor* b = scale(ctx, y, 2.0f);
    b->flags |= TENSOR_SIDE;
    Graph g = build_graph({add(ctx, b, a)});
    auto arena = allocate_graph(*be, g);
    tensor_set(x, xs.bytes.data());
    tensor_set(y, ys.bytes.data());
    for (int rep = 0; rep < 3; ++rep) compute_graph(*be, g);  // the second run captures, the third replays
    be->synchronize();
    const std::string report = be->last_graph_report();
    CAPTURE(report);
    const size_t chain = cuda_side_launches(*be) > 0 ? 6 : 7;
    const std::string want = strfmt("captured step: 7 kernels, %zu of them on its longest chain", chain);
    CHECK(report.find(want) != std::string::npos);
}

TEST_CASE("supports_op refuses what the kernels lack, and compute_graph then throws naming the op") {
    Context ctx;
    Tensor* q2k = ctx.new_tensor_2d(DType::Q2_K, 256, 4);  // a type minfer only dequantizes
    Tensor* w = ctx.new_tensor_2d(DType::Q6_K, 256, 4);
    Tensor* x = ctx.new_tensor_2d(DType::F32, 256, 2);
    Tensor* xt = ctx.new_tensor_2d(DType::F32, 2, 256);
    Tensor* q8 = ctx.new_tensor_2d(DType::Q8_0, 256, 2);
    for (Tensor* t : {q2k, w, x, xt, q8}) t->flags |= TENSOR_INPUT;
    Tensor* row_ids = ctx.new_tensor_1d(DType::I32, 1);
    CHECK_FALSE(gpu().supports_op(get_rows(ctx, q2k, row_ids)));
    CHECK(gpu().supports_op(get_rows(ctx, w, row_ids)));
    CHECK_FALSE(gpu().supports_op(cast(ctx, x, DType::Q6_K)));
    CHECK_FALSE(gpu().supports_op(cast(ctx, q2k, DType::F32)));  // dequantizing copies: KV cache types only
    CHECK(gpu().supports_op(cast(ctx, q8, DType::F32)));          // a test that can tell the two apart
    CHECK(gpu().supports_op(cast(ctx, x, DType::Q8_0)));
    CHECK(gpu().supports_op(mul_mat(ctx, w, x)));

    // Activations whose elements are not adjacent (a transposed view): the CPU gathers them, the
    // matvec kernels do not.
    Tensor* y = mul_mat(ctx, w, transpose(ctx, xt));
    CHECK_FALSE(gpu().supports_op(y));
    Graph g = build_graph({y});
    auto arena = allocate_graph(gpu(), g);
    try {
        compute_graph(gpu(), g);
        FAIL("compute_graph ran a node the CUDA backend cannot run");
    } catch (const Error& e) {
        INFO(e.what());
        CHECK(std::string(e.what()).find("MUL_MAT") != std::string::npos);
    }
}

TEST_CASE("an allocation larger than the GPU throws an Error with the CUDA message") {
    try {
        auto buf = gpu().alloc(size_t(1) << 50);  // 1 PiB
        FAIL("a 1 PiB allocation succeeded");
    } catch (const Error& e) {
        INFO(e.what());
        CHECK(std::string(e.what()).find("out of memory") != std::string::npos);
    }
    // The failure left no sticky error behind: the backend still computes.
    check_vs_cpu({random(DType::F32, {64, 2})},
                 [](Context& ctx, const std::vector<Tensor*>& in) { return scale(ctx, in[0], 2.0f); }, 0.0);
}
