// The CUDA backend's mixture-of-experts ops against the CPU backend (the reference): MUL_MAT_ID for
// every weight type it claims, TOP_K, SUM_ROWS, DIV, SIGMOID, a whole build_ffn_moe layer, decode timing.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/graph.h"
#include "core/ops.h"
#include "core/quants.h"
#include "cuda/cuda_backend.h"
#include "models/builders.h"
#include "row_codec.h"
#include "test_util.h"

using namespace mf;
using mf_test::encode;
using mf_test::random_floats;

namespace {

// A leaf's type, shape and bytes; the same Input feeds both backends.
struct Input {
    DType type;
    int64_t ne[4];
    std::vector<uint8_t> bytes;
    uint32_t flags = 0;  // besides TENSOR_INPUT
};

// in as MUL_MAT_ID's expert weights (TENSOR_ID_WEIGHT): the CUDA backend splits Q4_0 / Q8_0 rows.
Input id_weight(Input in) {
    in.flags |= TENSOR_ID_WEIGHT;
    return in;
}

Input values(DType type, const std::vector<int64_t>& shape, const std::vector<float>& v) {
    Input in{type, {1, 1, 1, 1}, {}};
    int n = 0;
    for (int64_t d : shape) in.ne[n++] = d;
    REQUIRE(int64_t(v.size()) == in.ne[0] * in.ne[1] * in.ne[2] * in.ne[3]);
    in.bytes = encode(type, v, in.ne[0]);
    return in;
}

Input random(DType type, const std::vector<int64_t>& shape, float lo = -1.0f, float hi = 1.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return values(type, shape, random_floats(size_t(n), lo, hi));
}

// A random n_used-subset of [0, n_expert) per token: I32 [n_used, T].
Input routes(int64_t n_used, int64_t T, int64_t n_expert) {
    std::vector<int32_t> v;
    for (int64_t t = 0; t < T; ++t) {
        std::vector<int32_t> all(static_cast<size_t>(n_expert));
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), mf_test::rng());
        v.insert(v.end(), all.begin(), all.begin() + n_used);
    }
    Input in{DType::I32, {n_used, T, 1, 1}, std::vector<uint8_t>(v.size() * 4)};
    std::memcpy(in.bytes.data(), v.data(), in.bytes.size());
    return in;
}

// Builds the result from the inputs. Graph: the graph being built, as ForwardState's, for builders that
// order nodes as the model's forward does (graph_expand); the result is expanded into it afterwards.
using Build = std::function<Tensor*(Context&, Graph&, const std::vector<Tensor*>&)>;

// The graph computing build's result (its TENSOR_OUTPUT), nodes in the order the builder expanded them.
Graph build_into_graph(Context& ctx, const Build& build, const std::vector<Tensor*>& leaves, Tensor** out) {
    Graph g;
    *out = build(ctx, g, leaves);
    (*out)->flags |= TENSOR_OUTPUT;
    graph_expand(g, *out);
    return g;
}

Backend& cpu() {
    static std::unique_ptr<Backend> b = make_cpu_backend(4);
    return *b;
}

Backend& gpu() {
    static std::unique_ptr<Backend> b = make_cuda_backend();
    return *b;
}

// Builds, allocates, uploads and computes the graph on be; returns the result's bytes.
std::vector<uint8_t> run(Backend& be, const std::vector<Input>& inputs, const Build& build, DType* type = nullptr) {
    Context ctx;
    std::vector<Tensor*> leaves;
    for (const Input& in : inputs) {
        Tensor* t = ctx.new_tensor(in.type, 4, in.ne);
        t->flags |= TENSOR_INPUT | in.flags;
        leaves.push_back(t);
    }
    Tensor* out = nullptr;
    Graph g = build_into_graph(ctx, build, leaves, &out);
    auto arena = allocate_graph(be, g);
    for (size_t i = 0; i < leaves.size(); ++i) {
        REQUIRE(leaves[i]->nbytes() == inputs[i].bytes.size());
        if (!leaves[i]->data) continue;  // the graph never reads it
        tensor_set(leaves[i], inputs[i].bytes.data());
        if (inputs[i].flags & TENSOR_ID_WEIGHT) {  // a backend's own layout still downloads as uploaded
            std::vector<uint8_t> back(inputs[i].bytes.size());
            tensor_get(leaves[i], back.data());
            CHECK(back == inputs[i].bytes);
        }
    }
    compute_graph(be, g);
    REQUIRE(out->is_contiguous());
    std::vector<uint8_t> bytes(out->nbytes());
    tensor_get(out, bytes.data());
    if (type) *type = out->type;
    return bytes;
}

std::vector<float> as_f32(const std::vector<uint8_t>& bytes) {
    std::vector<float> v(bytes.size() / 4);
    std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
}

// ||gpu - cpu|| / ||cpu|| <= tol for an f32 result.
void check_vs_cpu(const std::vector<Input>& inputs, const Build& build, double tol) {
    const std::vector<float> ref = as_f32(run(cpu(), inputs, build));
    const std::vector<float> got = as_f32(run(gpu(), inputs, build));
    REQUIRE(got.size() == ref.size());
    REQUIRE(!ref.empty());
    const std::vector<double> ref_d(ref.begin(), ref.end());
    const double err = mf_test::rel_error(got.data(), ref_d.data(), ref.size());
    INFO("relative error " << err << ", tolerance " << tol);
    CHECK(err <= tol);  // false for NaN, too
}

// check_vs_cpu, and for weights (inputs[0]) of a type the CUDA backend splits, the same with them split
// (TENSOR_ID_WEIGHT): split rows give the stored rows' bits, a row at a time (MINFER_CUDA_ID_ROWS=0)
// or two at once.
void check_vs_cpu_split(const std::vector<Input>& inputs, const Build& build, double tol) {
    check_vs_cpu(inputs, build, tol);
    if (!rows_split_fits(inputs[0].type)) return;
    std::vector<Input> split = inputs;
    split[0] = id_weight(split[0]);
    check_vs_cpu(split, build, tol);
    CHECK(run(gpu(), split, build) == run(gpu(), inputs, build));
}

const DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                              DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

}  // namespace

// Tolerances as MUL_MAT's (tests/test_gpu_ops.cpp): both backends quantize the activations bit-identically
// and compute the same integer block sums, so only the order of adding the scaled sums differs (~1e-6);
// float weights differ in summation order and precision (~1e-6).
TEST_CASE("mul_mat_id on CUDA matches the CPU for every weight type") {
    const int64_t M = 37, n_expert = 6;  // M: not a multiple of the 4 rows a CUDA block takes
    for (DType type : kWeightTypes) {
        const int64_t bs = dtype_traits(type).block_size;
        // Small rows (unaligned rows for the 18..34-byte blocks and K % 8 != 0 floats), then rows of whole
        // staged chunks (2048: 64 legacy blocks, 8 super-blocks) and of whole chunks plus a tail (2304).
        const int64_t small = bs == 256 ? 256 : bs == 32 ? 96 : 100;
        for (int64_t K : {small, int64_t(2048), int64_t(2304)}) {
            for (int64_t T : {1, 5}) {
                for (int64_t n_used : {1, 4}) {
                    for (bool shared_x : {true, false}) {
                        INFO(dtype_name(type) << " K=" << K << " T=" << T << " n_used=" << n_used
                                              << " shared_x=" << shared_x);
                        const int64_t n_b = shared_x ? 1 : n_used;
                        check_vs_cpu_split({random(type, {K, M, n_expert}), random(DType::F32, {K, n_b, T}),
                                      routes(n_used, T, n_expert)},
                                     [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                                         return mul_mat_id(ctx, in[0], in[1], in[2]);
                                     },
                                     dtype_traits(type).is_quantized ? 1e-4 : 1e-5);
                    }
                }
            }
        }
    }
}

// The weighted form (src3): a block's warps take the token's slots, the weighted dots summed in slot
// order. Weights as f32 [n_used, T] and as a transposed view (strides); T = 1 (decode) and 5; and 20
// slots of 24 experts, more than a block's 16 warps (a warp then takes two slots).
TEST_CASE("weighted mul_mat_id on CUDA matches the CPU") {
    const int64_t M = 37, n_expert = 6, n_used = 4, K = 2048;
    check_vs_cpu_split({random(DType::Q4_0, {256, M, 24}), random(DType::F32, {256, 20, 3}), routes(20, 3, 24),
                  random(DType::F32, {20, 3}, 0.0f, 1.0f)},
                 [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                     return mul_mat_id(ctx, in[0], in[1], in[2], in[3]);
                 },
                 1e-4);
    for (DType type : {DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
        for (int64_t T : {1, 5}) {
            for (bool strided : {false, true}) {
                INFO(dtype_name(type) << " T=" << T << " strided=" << strided);
                check_vs_cpu_split({random(type, {K, M, n_expert}), random(DType::F32, {K, n_used, T}),
                              routes(n_used, T, n_expert),
                              strided ? random(DType::F32, {T, n_used}, 0.0f, 1.0f)
                                      : random(DType::F32, {n_used, T}, 0.0f, 1.0f)},
                             [strided](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                                 return mul_mat_id(ctx, in[0], in[1], in[2], strided ? transpose(ctx, in[3]) : in[3]);
                             },
                             dtype_traits(type).is_quantized ? 1e-4 : 1e-5);
            }
        }
    }
    // Gated by the router (MoeGate::SOFTMAX): each slot's weight is its share of the softmax over the
    // token's logits, a warp's reduction; 64 experts (two logits a lane), a scale, and again 20 slots.
    for (int64_t T : {1, 5}) {
        INFO("softmax-gated T=" << T);
        check_vs_cpu_split({random(DType::Q4_0, {K, M, 64}), random(DType::F32, {K, 1, T}), routes(6, T, 64),
                      random(DType::F32, {64, T}, -3.0f, 3.0f)},
                     [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                         return mul_mat_id_softmax_gated(ctx, in[0], in[1], in[2], in[3], 1.5f);
                     },
                     1e-4);
    }
    check_vs_cpu_split({random(DType::Q4_0, {256, M, 24}), random(DType::F32, {256, 20, 3}), routes(20, 3, 24),
                  random(DType::F32, {24, 3}, -3.0f, 3.0f)},
                 [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                     return mul_mat_id_softmax_gated(ctx, in[0], in[1], in[2], in[3], 1.0f);
                 },
                 1e-4);
}

// Split rows (TENSOR_ID_WEIGHT) at each alignment the kernel takes: rows of 6 blocks (4-byte aligned),
// 44 (V2-Lite's down projection: 8-byte) and 64 (16-byte); rows of 3 blocks (2-byte) stay as stored.
// Rows of 88 (16-byte) and 140 (8-byte) blocks take more than one pass of two steps at once
// (MINFER_CUDA_ID_STEPS).
// Plain and weighted, decode and a prefill's 5 tokens (check_vs_cpu_split: the same bits as the rows as
// stored).
TEST_CASE("mul_mat_id with split expert rows matches the CPU") {
    const int64_t M = 37, n_expert = 6, n_used = 4;
    for (DType type : {DType::Q4_0, DType::Q8_0}) {
        for (int64_t K : {96, 192, 1408, 2048, 2816, 4480}) {
            for (int64_t T : {1, 5}) {
                INFO(dtype_name(type) << " K=" << K << " T=" << T);
                check_vs_cpu_split({random(type, {K, M, n_expert}), random(DType::F32, {K, 1, T}),
                                    routes(n_used, T, n_expert)},
                                   [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                                       return mul_mat_id(ctx, in[0], in[1], in[2]);
                                   },
                                   1e-4);
                check_vs_cpu_split({random(type, {K, M, n_expert}), random(DType::F32, {K, n_used, T}),
                                    routes(n_used, T, n_expert), random(DType::F32, {n_used, T}, 0.0f, 1.0f)},
                                   [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                                       return mul_mat_id(ctx, in[0], in[1], in[2], in[3]);
                                   },
                                   1e-4);
            }
        }
    }
}

TEST_CASE("top_k on CUDA picks exactly the CPU's indices, ties and NaN included") {
    struct Case {
        int64_t n, rows;
        int k;
        bool transposed;
    };
    for (const Case& c : {Case{64, 7, 6, false}, Case{64, 3, 64, false}, Case{64, 5, 1, false},
                          Case{1000, 4, 8, false}, Case{160, 2, 8, false}, Case{10, 6, 3, true},
                          Case{256, 9, 6, false}, Case{257, 3, 6, false}, Case{33, 5, 7, false},
                          Case{32, 3, 32, false}, Case{65, 2, 6, false}}) {
        // Rows up to 64 take the rank kernel, up to 256 the warp-a-row kernel (9 rows: a partial block of
        // 4), longer ones the block kernel.
        INFO("n=" << c.n << " rows=" << c.rows << " k=" << c.k << " transposed=" << c.transposed);
        // Eight levels and a few NaNs: ties at the top-k boundary in most rows.
        std::vector<float> v = random_floats(size_t(c.n * c.rows));
        for (auto& x : v) x = std::floor(x * 4.0f) / 4.0f;
        v[3] = std::nanf("");
        v[v.size() / 2] = std::nanf("");
        // -0 ties with the many +0 (the CPU compares with !=), and the infinities rank as numbers.
        v[5] = -0.0f;
        v[7] = INFINITY;
        v[v.size() - 2] = -INFINITY;
        const std::vector<int64_t> shape =
            c.transposed ? std::vector<int64_t>{c.rows, c.n} : std::vector<int64_t>{c.n, c.rows};
        const int k = c.k;
        const bool tr = c.transposed;
        const Build build = [k, tr](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
            return top_k(ctx, tr ? transpose(ctx, in[0]) : in[0], k);
        };
        const Input in = values(DType::F32, shape, v);
        CHECK(run(gpu(), {in}, build) == run(cpu(), {in}, build));
    }
}

TEST_CASE("sum_rows, div and sigmoid on CUDA match the CPU") {
    // Sums in f32 (GPU) vs double (CPU): ~1e-7. Division: one correctly rounded op on both. Sigmoid:
    // expf on each side, an ulp or two.
    check_vs_cpu({random(DType::F32, {6, 2048, 3})},
                 [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                     return sum_rows(ctx, permute(ctx, in[0], 1, 0, 2, 3));
                 },
                 1e-6);
    check_vs_cpu({random(DType::F32, {1000, 3})},
                 [](Context& ctx, Graph&, const std::vector<Tensor*>& in) { return sum_rows(ctx, in[0]); }, 1e-6);
    check_vs_cpu({random(DType::F32, {6, 5, 3}), random(DType::F32, {1, 5, 3}, 0.5f, 2.0f)},
                 [](Context& ctx, Graph&, const std::vector<Tensor*>& in) { return div(ctx, in[0], in[1]); }, 0.0);
    check_vs_cpu({random(DType::F32, {64, 4}), random(DType::F32, {1, 64}, 0.5f, 2.0f)},
                 [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                     return div(ctx, transpose(ctx, in[0]), in[1]);
                 },
                 0.0);
    check_vs_cpu({random(DType::F32, {100, 7}, -12.0f, 12.0f)},
                 [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
                     return sigmoid(ctx, transpose(ctx, in[0]));
                 },
                 1e-6);
}

namespace {

// The leaves of one MoE layer: x [n_embd, T], router, bias, experts, shared experts, the residual.
std::vector<Input> moe_inputs(DType type, int64_t D, int64_t F, int64_t E, int64_t n_shared, int64_t T) {
    return {random(DType::F32, {D, T}),
            random(DType::F32, {D, E}, -0.3f, 0.3f),
            random(DType::F32, {E}, -0.1f, 0.1f),
            random(type, {D, F, E}),
            random(type, {D, F, E}),
            random(type, {F, D, E}),
            random(type, {D, F * n_shared}),
            random(type, {D, F * n_shared}),
            random(type, {F * n_shared, D}),
            random(DType::F32, {D, T})};
}

// A layer of D embedding values, E experts of F (4 used), n_shared shared ones. Sigmoid gating renormalizes its
// weights; softmax gating without the selection bias is DeepSeek-V2's (the down projection gates).
HParams moe_hparams(int64_t D, int64_t F, int64_t E, int64_t n_shared, HParams::ExpertGating gating, float scale) {
    HParams hp;
    hp.n_embd = uint32_t(D);
    hp.n_expert = uint32_t(E);
    hp.n_expert_used = 4;
    hp.n_expert_shared = uint32_t(n_shared);
    hp.n_ff_exp = uint32_t(F);
    hp.expert_gating = gating;
    hp.expert_weights_norm = gating == HParams::ExpertGating::SIGMOID;
    hp.expert_weights_scale = scale;
    return hp;
}

// bias: the router's selection bias (in[2]) is used. stacked: the experts' gate and up as the loader
// stacks them, in[10] [D, 2 F, E] (models/model.cpp), read instead of in[3] and in[4]. normed: x is
// RMS_NORM(in[0]) times in[11] (f32 [D]), as the model's FFN norm makes it, not the input itself.
Build moe_build(const Model& model, bool bias = true, bool stacked = false, bool normed = false) {
    return [&model, bias, stacked, normed](Context& ctx, Graph& graph, const std::vector<Tensor*>& in) {
        LayerWeights l;
        l.ffn_gate_inp = in[1];
        l.ffn_exp_probs_b = bias ? in[2] : nullptr;
        l.ffn_gate_exps = in[3];
        l.ffn_up_exps = in[4];
        if (stacked) l.ffn_gate_up_exps = in[10];
        l.ffn_down_exps = in[5];
        l.ffn_gate_shexp = in[6];
        l.ffn_up_shexp = in[7];
        l.ffn_down_shexp = in[8];
        KVCache kv;  // build_ffn_moe stores nothing in the cache
        ForwardState s{ctx, graph, model, kv, uint32_t(in[0]->ne[1]), true, nullptr, nullptr, {}, {}};
        Tensor* x = normed ? mul(ctx, rms_norm(ctx, in[0], 1e-6f), in[11]) : in[0];
        return build_ffn_moe(s, x, in[9], l);
    };
}

// Whether split expert rows are taken a warp's rows at once (neither MINFER_CUDA_ID_ROWS=0 nor
// MINFER_CUDA_SPLIT_ROWS=0): what the routing folds need.
bool split_rows_at_once() {
    auto switched_off = [](const char* name) {
        const char* v = std::getenv(name);
        return v && std::string(v) == "0";
    };
    return !switched_off("MINFER_CUDA_ID_ROWS") && !switched_off("MINFER_CUDA_SPLIT_ROWS");
}

}  // namespace

TEST_CASE("a whole build_ffn_moe layer on CUDA matches the CPU (softmax and sigmoid gating)") {
    const int64_t D = 256, F = 256, E = 16, n_shared = 2;
    for (auto gating : {HParams::ExpertGating::SOFTMAX, HParams::ExpertGating::SIGMOID}) {
        for (DType type : {DType::F16, DType::Q4_0, DType::Q6_K}) {
            for (int64_t T : {1, 6, 20}) {  // 20: the prefill kernels
                INFO("gating=" << int(gating) << " " << dtype_name(type) << " T=" << T);
                Model model;
                model.hp = moe_hparams(D, F, E, n_shared, gating, 2.0f);
                // Routing is computed on each backend: with random inputs a near tie at the top-k boundary
                // (which f32 rounding could break either way) is a ~1e-6 event per token. The layer chains
                // matmuls: their ~1e-6 differences can round an element of the next quantized activation
                // the other way (~1e-4 chance each, ~1e-4 of the output each time), so 2e-3 is the bound;
                // a wrong expert or weight is off by 1e-1 or more.
                check_vs_cpu(moe_inputs(type, D, F, E, n_shared, T), moe_build(model), 2e-3);
                if (gating == HParams::ExpertGating::SOFTMAX)  // and without the bias: DeepSeek-V2's gating
                    check_vs_cpu(moe_inputs(type, D, F, E, n_shared, T), moe_build(model, false), 2e-3);
            }
        }
    }
}

TEST_CASE("a build_ffn_moe layer's fused adds and shared quantized x give the unfused backend's bits") {
    // The shared experts' down projection stores residual + its product, the routed one (weighted
    // MUL_MAT_ID) that plus its slots' sum, and the routed gate_up reuses the shared one's quantized x.
    setenv("MINFER_CUDA_FUSE_ADD", "0", 1);
    setenv("MINFER_CUDA_ACT_REUSE", "0", 1);
    std::unique_ptr<Backend> unfused = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_ADD");
    unsetenv("MINFER_CUDA_ACT_REUSE");
    const int64_t D = 256, F = 256, E = 16, n_shared = 2;
    for (auto gating : {HParams::ExpertGating::SOFTMAX, HParams::ExpertGating::SIGMOID}) {
        for (DType type : {DType::F16, DType::Q4_0, DType::Q4_K}) {
            for (int64_t T : {1, 3, 6}) {
                INFO("gating=" << int(gating) << " " << dtype_name(type) << " T=" << T);
                Model model;
                model.hp = moe_hparams(D, F, E, n_shared, gating, 1.0f);
                const std::vector<Input> inputs = moe_inputs(type, D, F, E, n_shared, T);
                for (bool bias : {true, false}) {
                    CAPTURE(bias);
                    CHECK(run(gpu(), inputs, moe_build(model, bias)) == run(*unfused, inputs, moe_build(model, bias)));
                    // Both residual ADDs stored by the down projections (the shared one only on the
                    // quantized matvec, not for F16 weights): the planner keeps each sum off the sources
                    // of the matmul before it.
                    CHECK(cuda_fused_nodes(gpu()) - cuda_fused_nodes(*unfused) == (type == DType::F16 ? 1u : 2u));
                }
            }
        }
    }
}

TEST_CASE("a build_ffn_moe layer's TOP_K folded into its routed MUL_MAT_ID gives the unfolded backend's bits") {
    // MINFER_CUDA_FUSE_TOPK=1: with DeepSeek-V2's gating (softmax, no selection bias) and split Q4_0 /
    // Q8_0 experts taken a warp's rows at once, the TOP_K is not launched; the routed gate's
    // MUL_MAT_ID ranks the router's logits itself and writes the ids the up and down projections
    // read. With the bias, or sigmoid gating, the gate weights' GET_ROWS reads the ids first: nothing
    // folds. 16 and 64 experts (one and two values a lane); rows of 8 and 44 blocks (two steps a
    // round trip reach the second under MINFER_CUDA_ID_STEPS). The router's rows 7 and 10 copy row 3,
    // scaled up so that it is usually chosen: three logits tie exactly and the lowest index must win,
    // as in TOP_K. Three runs a case: the graph is captured from the second on.
    setenv("MINFER_CUDA_FUSE_TOPK", "1", 1);
    std::unique_ptr<Backend> routed = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_TOPK");
    const bool can_fold = split_rows_at_once();
    const int64_t F = 256, n_shared = 2;
    struct Shape {
        int64_t D, E;
    };
    for (Shape shape : {Shape{256, 16}, Shape{256, 64}, Shape{1408, 16}}) {
        const int64_t D = shape.D, E = shape.E;
        for (auto gating : {HParams::ExpertGating::SOFTMAX, HParams::ExpertGating::SIGMOID}) {
            for (DType type : {DType::Q4_0, DType::Q8_0}) {
                for (int64_t T : {1, 3, 20}) {
                    INFO("D=" << D << " E=" << E << " gating=" << int(gating) << " " << dtype_name(type) << " T=" << T);
                    Model model;
                    model.hp = moe_hparams(D, F, E, n_shared, gating, 1.0f);
                    std::vector<Input> inputs = moe_inputs(type, D, F, E, n_shared, T);
                    for (int i : {3, 4, 5}) inputs[i] = id_weight(inputs[i]);
                    float* router = reinterpret_cast<float*>(inputs[1].bytes.data());  // f32 [D, E]
                    for (int64_t d = 0; d < D; ++d) router[3 * D + d] *= 4.0f;
                    for (int64_t e : {7, 10}) std::copy_n(router + 3 * D, D, router + e * D);
                    for (bool bias : {true, false}) {
                        CAPTURE(bias);
                        const Build build = moe_build(model, bias);
                        const std::vector<uint8_t> want = run(gpu(), inputs, build);
                        const bool folds = can_fold && gating == HParams::ExpertGating::SOFTMAX && !bias;
                        for (int rep = 0; rep < 3; ++rep) {
                            CAPTURE(rep);
                            CHECK(run(*routed, inputs, build) == want);
                            CHECK(cuda_fused_nodes(*routed) - cuda_fused_nodes(gpu()) == (folds ? 1u : 0u));
                        }
                    }
                }
            }
        }
    }
}

TEST_CASE("a build_ffn_moe layer's routed experts in one launch give the four launches' bits") {
    // MINFER_CUDA_MOE_BLOCK=1: with DeepSeek-V2's gating (softmax, no selection bias), one token and the
    // stacked gate_up of split Q4_0 / Q8_0 experts, the TOP_K, the gate_up, the SWIGLU and the weighted
    // down (with its residual ADD) are one persistent launch whose blocks meet at a grid barrier
    // (launch_moe_block). Its result must be the four launches' bits, and the CPU's within the layer's
    // tolerance. Shapes: rows of 8 and 44 blocks (x 256 or 1408 wide), 16 and 64 experts, 4 and 6
    // used, V2-Lite's rows (2048 wide, experts of 1408, 6 used; 8 experts, not 64). The router's rows
    // 5 and E - 1 copy row 3, scaled up so that it is usually chosen: exact ties, the lowest index
    // first. x is the layer's input, or (normed) the model's RMS_NORM times its weights, a result the
    // planner may reuse once the gate_up has read it, and which the scratch already holds quantized.
    // Three runs a case (the graph is captured from the second on, the barrier's words reused by every
    // run), the second with another x. T = 3 and the other gatings do not fold: the same bits
    // trivially, the count unchanged. The same with one stream (MINFER_CUDA_SIDE=0), where nothing folds.
    setenv("MINFER_CUDA_MOE_BLOCK", "1", 1);
    std::unique_ptr<Backend> block = make_cuda_backend();
    // With one stream the shared experts' launches lie between the gate_up and the down on the block's
    // own stream, their quantizations in its scratch over x's: the fold must not happen.
    setenv("MINFER_CUDA_SIDE", "0", 1);
    std::unique_ptr<Backend> block_one_stream = make_cuda_backend();
    unsetenv("MINFER_CUDA_SIDE");
    unsetenv("MINFER_CUDA_MOE_BLOCK");
    const bool can_fold = split_rows_at_once();
    struct Shape {
        int64_t D, F, E, used;
    };
    for (Shape shape : {Shape{256, 256, 16, 4}, Shape{256, 256, 64, 6}, Shape{1408, 256, 16, 4},
                        Shape{2048, 1408, 8, 6}}) {
        const int64_t D = shape.D, F = shape.F, E = shape.E, n_shared = 2;
        for (auto gating : {HParams::ExpertGating::SOFTMAX, HParams::ExpertGating::SIGMOID}) {
            for (DType type : {DType::Q4_0, DType::Q8_0}) {
                for (int64_t T : {1, 3}) {
                    // V2-Lite's shape (~60 M weights a matrix) only where it folds: its inputs take seconds.
                    if (D == 2048 && (gating != HParams::ExpertGating::SOFTMAX || T != 1)) continue;
                    INFO("D=" << D << " F=" << F << " E=" << E << " used=" << shape.used << " gating=" << int(gating)
                              << " " << dtype_name(type) << " T=" << T);
                    Model model;
                    model.hp = moe_hparams(D, F, E, n_shared, gating, 1.0f);
                    model.hp.n_expert_used = uint32_t(shape.used);
                    std::vector<Input> inputs = moe_inputs(type, D, F, E, n_shared, T);
                    inputs.push_back(id_weight(random(type, {D, 2 * F, E})));  // [10]: the stacked gate_up
                    inputs.push_back(random(DType::F32, {D}, 0.5f, 1.5f));       // [11]: the norm's weights
                    inputs[5] = id_weight(inputs[5]);
                    for (int i : {3, 4}) inputs[i] = random(type, {32, 1, 1});  // the stacked one is read instead
                    float* router = reinterpret_cast<float*>(inputs[1].bytes.data());  // f32 [D, E]
                    for (int64_t d = 0; d < D; ++d) router[3 * D + d] *= 4.0f;
                    for (int64_t e : {int64_t(5), E - 1}) std::copy_n(router + 3 * D, D, router + e * D);
                    for (const std::pair<bool, bool>& bn : {std::pair{true, false}, std::pair{false, false},
                                                            std::pair{false, true}}) {
                        const bool bias = bn.first, normed = bn.second;
                        CAPTURE(bias);
                        CAPTURE(normed);
                        const Build build = moe_build(model, bias, true, normed);
                        // The runs alternate two x's, so that a run's SWIGLU left in the scratch by the
                        // run before cannot stand in for its own (a phase 2 that read before the barrier).
                        std::vector<Input> other = inputs;
                        other[0] = random(DType::F32, {D, T});
                        const std::vector<uint8_t> want[2] = {run(gpu(), inputs, build), run(gpu(), other, build)};
                        const bool folds = can_fold && gating == HParams::ExpertGating::SOFTMAX && !bias && T == 1;
                        for (int rep = 0; rep < 3; ++rep) {
                            CAPTURE(rep);
                            const std::vector<uint8_t> got = run(*block, rep == 1 ? other : inputs, build);
                            CHECK(got == want[rep == 1]);
                            CHECK(run(*block_one_stream, rep == 1 ? other : inputs, build) == want[rep == 1]);
                            // TOP_K, gate_up and SWIGLU are not launched; the four launches' backend skips
                            // the SWIGLU too (the down's quantizer makes it).
                            CHECK(cuda_fused_nodes(*block) - cuda_fused_nodes(gpu()) == (folds ? 2u : 0u));
                            if (rep == 0 && got != want[0]) {  // how far: a wrong expert is off by 1e-1 or more
                                const std::vector<float> ref = as_f32(run(cpu(), inputs, build)), g = as_f32(got);
                                const std::vector<double> ref_d(ref.begin(), ref.end());
                                const double err = mf_test::rel_error(g.data(), ref_d.data(), ref.size());
                                INFO("relative error against the CPU " << err);
                                CHECK(err <= 2e-3);
                            }
                        }
                    }
                }
            }
        }
    }
}

TEST_CASE("a build_ffn_moe layer's shared experts on the second stream give the one-stream backend's bits") {
    // The shared experts' chain (flagged TENSOR_SIDE) runs beside the routing and the routed experts;
    // the routed down projection, which adds the shared sum, waits for it. Three runs a case: the
    // repeated graph is captured as a CUDA graph from the second on, side stream and all.
    setenv("MINFER_CUDA_SIDE", "0", 1);
    std::unique_ptr<Backend> one_stream = make_cuda_backend();
    unsetenv("MINFER_CUDA_SIDE");
    const int64_t D = 256, F = 256, E = 16, n_shared = 2;
    for (auto gating : {HParams::ExpertGating::SOFTMAX, HParams::ExpertGating::SIGMOID}) {
        for (DType type : {DType::F16, DType::Q4_0, DType::Q4_K}) {
            for (int64_t T : {1, 6, 20}) {
                INFO("gating=" << int(gating) << " " << dtype_name(type) << " T=" << T);
                Model model;
                model.hp = moe_hparams(D, F, E, n_shared, gating, 1.0f);
                const std::vector<Input> inputs = moe_inputs(type, D, F, E, n_shared, T);
                const std::vector<uint8_t> want = run(*one_stream, inputs, moe_build(model));
                CHECK(cuda_side_launches(*one_stream) == 0);
                for (int rep = 0; rep < 3; ++rep) {
                    CAPTURE(rep);
                    CHECK(run(gpu(), inputs, moe_build(model)) == want);
                    CHECK(cuda_side_launches(gpu()) >= 2);  // at least the shared gate_up and down
                }
            }
        }
    }
}

TEST_CASE("decode-shape mul_mat_id (DeepSeek-V2-Lite gate_exps, 6 of 64 experts) matches the CPU; its time") {
    const int64_t K = 2048, M = 1408, n_expert = 64, n_used = 6;
    for (DType type : {DType::Q4_0, DType::Q8_0}) {
        INFO(dtype_name(type));
        const std::vector<Input> inputs = {random(type, {K, M, n_expert}), random(DType::F32, {K, 1, 1}),
                                           routes(n_used, 1, n_expert)};
        const Build build = [](Context& ctx, Graph&, const std::vector<Tensor*>& in) {
            return mul_mat_id(ctx, in[0], in[1], in[2]);
        };
        check_vs_cpu(inputs, build, 1e-4);

        Context ctx;
        std::vector<Tensor*> leaves;
        for (const Input& in : inputs) {
            Tensor* t = ctx.new_tensor(in.type, 4, in.ne);
            t->flags |= TENSOR_INPUT;
            leaves.push_back(t);
        }
        Tensor* out = nullptr;
        Graph g = build_into_graph(ctx, build, leaves, &out);
        auto arena = allocate_graph(gpu(), g);
        for (size_t i = 0; i < leaves.size(); ++i) tensor_set(leaves[i], inputs[i].bytes.data());
        for (int i = 0; i < 3; ++i) compute_graph(gpu(), g);  // the third run replays a captured CUDA graph
        gpu().synchronize();
        const int reps = 200;
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) compute_graph(gpu(), g);
        gpu().synchronize();
        const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
        const double bytes = double(n_used) * double(dtype_row_size(type, K)) * double(M);
        MESSAGE(std::string(dtype_name(type)) << " mul_mat_id [2048, 1408, 64] x 6 used: " << us << " us per step (quantize + matvec, "
                                 << bytes / us * 1e-3 << " GB/s of expert weights)");
    }
}
