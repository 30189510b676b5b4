// The CUDA attention and KV-store kernels against the CPU backend (the reference): FLASH_ATTN for
// every cache type pair, head size, GQA group and split count; quantized cache stores byte for byte;
// whole sessions with quantized and windowed caches.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/graph.h"
#include "core/ops.h"
#include "cuda/cuda_backend.h"
#include "model_fixture.h"
#include "models/model.h"
#include "models/session.h"
#include "row_codec.h"
#include "test_util.h"

using namespace mf;
using mf_test::max_rel_diff;
using mf_test::random_tokens;
using mf_test::random_floats;

namespace {

Backend& cpu() {
    static std::unique_ptr<Backend> b = make_cpu_backend(2);
    return *b;
}
Backend& gpu() {
    static std::unique_ptr<Backend> b = make_cuda_backend();
    return *b;
}

struct Leaf {
    DType type;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
};

Leaf leaf_of(DType type, std::vector<int64_t> shape, const std::vector<float>& v) {
    return Leaf{type, shape, mf_test::encode(type, v, shape[0])};
}

// Builds the graph on be from the leaves, runs it, returns the bytes of out (or of the tensor out writes into).
template <typename Build>
std::vector<uint8_t> run(Backend& be, const std::vector<Leaf>& leaves, Build build) {
    Context ctx;
    std::vector<Tensor*> ts;
    for (const Leaf& l : leaves) {
        int64_t ne[4] = {1, 1, 1, 1};
        for (size_t d = 0; d < l.shape.size(); ++d) ne[d] = l.shape[d];
        Tensor* t = ctx.new_tensor(l.type, int(l.shape.size()), ne);
        t->flags |= TENSOR_INPUT;
        ts.push_back(t);
    }
    Tensor* out = build(ctx, ts);
    Graph g = build_graph({out});
    auto arena = allocate_graph(be, g);
    for (size_t i = 0; i < ts.size(); ++i) {
        REQUIRE(ts[i]->nbytes() == leaves[i].bytes.size());
        if (ts[i]->data) tensor_set(ts[i], leaves[i].bytes.data());  // else the graph never reads it
    }
    compute_graph(be, g);
    const Tensor* result = out->view_src ? out->view_src : out;
    std::vector<uint8_t> bytes(result->nbytes());
    tensor_get(result, bytes.data());
    return bytes;
}


std::vector<float> as_floats(const std::vector<uint8_t>& b) {
    std::vector<float> v(b.size() / 4);
    std::memcpy(v.data(), b.data(), b.size());
    return v;
}

// The mask of T new tokens at the end of n_kv positions: token t sees positions 0 .. n_kv - T + t.
std::vector<float> causal_mask(int64_t n_kv, int64_t T) {
    std::vector<float> mask(size_t(n_kv * T));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < n_kv; ++j) mask[size_t(t * n_kv + j)] = j <= n_kv - T + t ? 0.0f : -INFINITY;
    return mask;
}

}  // namespace

// Both backends read the same dequantized values; they differ in summation order and exp (the GPU
// uses __expf, ~2 ulp), so 1e-4 relative error is generous for f32 sums over <= 4096 positions. The
// tile and MLA kernels' queries and weights are hi + lo halves, f32 precision to ~2^-22, so they are
// held to the same.
TEST_CASE("flash_attn on CUDA matches the CPU for every K/V type pair, head size, group and split") {
    const DType types[] = {DType::F16, DType::Q8_0, DType::Q4_0};
    struct Shape {
        int64_t hd, n_head, n_head_kv, T, n_kv;
        int64_t hdv = 0;     // 0: hd; else MLA: V is the first hdv values of each K row
        bool v_own = false;  // with hdv: V has rows of its own (expanded MLA: 192/128 per head)
        bool causal = false; // token t sees positions up to n_kv - T + t (else a random fifth masked)
    };
    const Shape shapes[] = {
        {64, 8, 8, 1, 37},     // MHA decode, one split
        {128, 32, 8, 1, 4096}, // 8B-shaped decode at depth: many splits, combine kernel
        {64, 4, 1, 1, 12000},  // more splits (375 for the quantized caches) than a combine block has threads
        // f16 decode with head size 64 or 128 runs the tensor-core tile kernel (16 heads a block):
        {128, 32, 1, 1, 500},  // MQA, two blocks of 16 heads; partial last tiles
        {64, 9, 3, 1, 1000},   // a group of 3 padded to 16
        {128, 8, 8, 1, 5},     // fewer positions than one tile
        {64, 9, 3, 5, 300},    // SmolLM2-shaped GQA, a batch of 5
        {256, 4, 1, 3, 700},   // Gemma-3-sized heads, MQA
        {128, 12, 1, 2, 1000}, // MQA with a group larger than one block serves (8)
        {32, 4, 2, 17, 64},    // prefill-like
        // f16 prefill runs the tile kernel: 16 (token, head) rows a block, split along the positions
        // while the rows leave the GPU short of blocks; causal masks leave tiles skipped whole beside
        // tiles kept
        {128, 32, 8, 40, 300}, // 8B-shaped, 40 tokens: 80 blocks, 4 splits
        {128, 32, 8, 300, 400, 0, false, true},  // 8B-shaped: 4 tokens x 4 heads a block, 600 blocks, 1 split
        {64, 4, 4, 533, 600, 0, false, true},    // MHA: 16 tokens a block, a partial last block
        {128, 32, 1, 70, 100},                    // MQA: a group of 32, two blocks a token
        {192, 16, 16, 140, 200, 128, true, true}, // --mla-expanded prefill: 192/128 per head
        {576, 16, 1, 1, 700, 512},  // DeepSeek-V2-Lite MLA decode: latent rows shared by 16 heads
        // f16 MLA decode (576/512, 288/256, 544/512) runs the tensor-core MLA kernel: 64-position tiles
        {576, 16, 1, 1, 5000, 512}, // at depth: many splits, a partial last tile
        {576, 8, 1, 1, 40, 512},    // 8 heads padded to 16; fewer positions than a tile
        {544, 32, 1, 1, 200, 512},  // two blocks of 16 heads
        {192, 16, 16, 1, 3000, 128, true},  // --mla-expanded V2-Lite: per-head K 192, V 128 (tile kernel)
        {24, 4, 4, 3, 30, 16, true},        // and the fixtures' 24/16 (flash_attn_kernel)
        {576, 16, 1, 3, 50, 512},
        {40, 4, 1, 4, 30, 32},      // the MLA test fixtures' latent (32 + 8 rope dims)
        {288, 32, 1, 1, 300, 256},  // attn-lab's llama-1b MLA-256 variant
        {544, 32, 1, 2, 90, 512},   // and MLA-512
    };
    for (const Shape& sh : shapes)
        for (DType tk : types)
            for (DType tv : types) {
                CAPTURE(sh.hd);
                CAPTURE(sh.n_head_kv);
                CAPTURE(sh.n_kv);
                CAPTURE(dtype_name(tk));
                CAPTURE(dtype_name(tv));
                const bool mla = sh.hdv != 0 && !sh.v_own;
                if (mla && (tv != tk || (tk != DType::F16 && sh.hd % 32 != 0))) continue;  // V is K's rows
                const int64_t hdv = sh.hdv ? sh.hdv : sh.hd;
                if ((tk != DType::F16 && sh.hd % 32 != 0) || (tv != DType::F16 && hdv % 32 != 0)) continue;
                const int64_t slots = sh.n_kv + 5;
                std::vector<float> mask(size_t(sh.n_kv * sh.T));
                std::uniform_int_distribution<int> coin(0, 4);
                for (int64_t t = 0; t < sh.T; ++t)
                    for (int64_t j = 0; j < sh.n_kv; ++j) {
                        const bool seen = sh.causal ? j <= sh.n_kv - sh.T + t : coin(mf_test::rng()) != 0;
                        mask[size_t(t * sh.n_kv + j)] = seen ? 0.0f : -INFINITY;
                    }
                // The last token sees nothing: its output must be zeros, not NaN.
                if (sh.T > 1)
                    for (int64_t j = 0; j < sh.n_kv; ++j) mask[size_t((sh.T - 1) * sh.n_kv + j)] = -INFINITY;
                std::vector<Leaf> leaves = {
                    leaf_of(DType::F32, {sh.hd, sh.n_head, sh.T}, random_floats(size_t(sh.hd * sh.n_head * sh.T), -2, 2)),
                    leaf_of(DType::F32, {sh.n_kv, sh.T}, mask),
                    leaf_of(tk, {sh.hd * sh.n_head_kv, slots}, random_floats(size_t(sh.hd * sh.n_head_kv * slots), -2, 2)),
                };
                if (!mla) leaves.push_back(leaf_of(tv, {hdv * sh.n_head_kv, slots}, random_floats(size_t(hdv * sh.n_head_kv * slots))));
                auto build = [&](Context& ctx, const std::vector<Tensor*>& t) {
                    Tensor* K = view_3d(ctx, t[2], sh.hd, sh.n_kv, sh.n_head_kv, t[2]->nb[1], dtype_row_size(tk, sh.hd), 0);
                    Tensor* V = mla ? view_3d(ctx, t[2], hdv, sh.n_kv, 1, t[2]->nb[1], t[2]->nb[1] * slots, 0)
                                    : view_3d(ctx, t[3], hdv, sh.n_kv, sh.n_head_kv, t[3]->nb[1], dtype_row_size(tv, hdv), 0);
                    return flash_attn(ctx, t[0], K, V, t[1], 1.0f / std::sqrt(float(sh.hd)));
                };
                const std::vector<float> want = as_floats(run(cpu(), leaves, build));
                const std::vector<float> got = as_floats(run(gpu(), leaves, build));
                REQUIRE(got.size() == want.size());
                const std::vector<double> want_d(want.begin(), want.end());
                const double err = mf_test::rel_error(got.data(), want_d.data(), want.size());
                CHECK(err < 1e-4);
                if (sh.T > 1) {
                    bool zeros = true;
                    for (size_t i = got.size() - size_t(hdv * sh.n_head); i < got.size(); ++i) zeros &= got[i] == 0.0f;
                    CHECK(zeros);
                }
            }
}

// A quantized MLA latent keeps its roped part apart in f16 (FLASH_ATTN's src4): the scalar and fused
// kernels read a K row as [c_kv blocks ; f16 rope values] for each latent size they cover, decode at
// depth (splits and the combine) and a few tokens at once, against the CPU.
TEST_CASE("flash_attn and attn_fused on CUDA with a quantized latent's rope part apart match the CPU") {
    struct Shape {
        int64_t hd, hd_r, n_head, T, n_kv;
    };
    const Shape shapes[] = {
        {512, 64, 16, 1, 3000},  // DeepSeek-V2-Lite decode at depth
        {512, 64, 16, 3, 50},
        {32, 8, 4, 4, 30},       // the fixtures' latent
        {256, 32, 32, 1, 300},   // attn-lab's MLA-256
        {512, 32, 32, 2, 90},    // and MLA-512
    };
    for (const Shape& sh : shapes)
        for (DType type : {DType::Q8_0, DType::Q4_0})
            for (bool fused : {false, true}) {
                CAPTURE(sh.hd);
                CAPTURE(sh.n_kv);
                CAPTURE(dtype_name(type));
                CAPTURE(fused);
                const int64_t w = sh.hd + sh.hd_r, slots = sh.n_kv + 5;
                const std::vector<Leaf> leaves = {
                    leaf_of(DType::F32, {w, sh.n_head, sh.T}, random_floats(size_t(w * sh.n_head * sh.T), -2, 2)),
                    leaf_of(DType::F32, {sh.n_kv, sh.T}, causal_mask(sh.n_kv, sh.T)),
                    leaf_of(type, {sh.hd, slots}, random_floats(size_t(sh.hd * slots), -2, 2)),
                    leaf_of(DType::F16, {sh.hd_r, slots}, random_floats(size_t(sh.hd_r * slots), -2, 2)),
                };
                auto build = [&](Context& ctx, const std::vector<Tensor*>& t) {
                    Tensor* K = view_3d(ctx, t[2], sh.hd, sh.n_kv, 1, t[2]->nb[1], t[2]->nb[1] * slots, 0);
                    Tensor* V = view_3d(ctx, t[2], sh.hd, sh.n_kv, 1, t[2]->nb[1], t[2]->nb[1] * slots, 0);
                    Tensor* R = view_3d(ctx, t[3], sh.hd_r, sh.n_kv, 1, t[3]->nb[1], t[3]->nb[1] * slots, 0);
                    const float sc = 1.0f / std::sqrt(float(w));
                    return fused ? attn_fused(ctx, t[0], K, V, t[1], sc, R) : flash_attn(ctx, t[0], K, V, t[1], sc, R);
                };
                const std::vector<float> want = as_floats(run(cpu(), leaves, build));
                const std::vector<float> got = as_floats(run(gpu(), leaves, build));
                REQUIRE(got.size() == want.size());
                const std::vector<double> want_d(want.begin(), want.end());
                CHECK(mf_test::rel_error(got.data(), want_d.data(), want.size()) < 1e-4);
            }
    // What the kernels lack is refused up front: an f16 K with a tail (an f16 latent stays whole), a
    // rope width no latent has, V not K's own rows.
    Context ctx;
    auto node = [&](DType tk, int64_t hd_r, bool v_apart) {
        Tensor* q = ctx.new_tensor_3d(DType::F32, 512 + hd_r, 16, 1);
        Tensor* kc = ctx.new_tensor_2d(tk, 512, 64);
        Tensor* vc = ctx.new_tensor_2d(tk, 512, 64);
        Tensor* rc = ctx.new_tensor_2d(DType::F16, hd_r, 64);
        Tensor* m = ctx.new_tensor_2d(DType::F32, 64, 1);
        Tensor* K = view_3d(ctx, kc, 512, 64, 1, kc->nb[1], kc->nb[1] * 64, 0);
        Tensor* V = view_3d(ctx, v_apart ? vc : kc, 512, 64, 1, kc->nb[1], kc->nb[1] * 64, 0);
        Tensor* R = view_3d(ctx, rc, hd_r, 64, 1, rc->nb[1], rc->nb[1] * 64, 0);
        return flash_attn(ctx, q, K, V, m, 1.0f, R);
    };
    CHECK(gpu().supports_op(node(DType::Q8_0, 64, false)));
    CHECK_FALSE(gpu().supports_op(node(DType::F16, 64, false)));
    CHECK_FALSE(gpu().supports_op(node(DType::Q8_0, 16, false)));
    CHECK_FALSE(gpu().supports_op(node(DType::Q8_0, 64, true)));
}

TEST_CASE("MLA's query and latent-row CONCATs are read by the attention and the cache store, not launched") {
    // As arch_deepseek2 builds them: q = [W_UK^T q_nope (a permuted view) ; q_pe] per head, the latent
    // row [c_kv ; k_pe] stored into an f16 cache. The fused kernels give the unfused ones' bits.
    setenv("MINFER_CUDA_FUSE_CONCAT", "0", 1);
    std::unique_ptr<Backend> unfused = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_CONCAT");
    // The sources are computed; the planner keeps the attention's result off them (the CONCAT runs just
    // before it), so one token always takes the fusion (with 32 heads over 40 positions, two blocks of
    // one split, it needs exactly that).
    const int64_t lora = 512, rope = 64, width = lora + rope;
    for (int64_t n_head : {16, 32}) {
        for (int64_t T : {1, 3}) {
            for (int64_t n_kv : {40, 700}) {
                CAPTURE(n_head);
                CAPTURE(T);
                CAPTURE(n_kv);
                const int64_t slots = n_kv + 5;
                const std::vector<float> mask = causal_mask(n_kv, T);
                const std::vector<Leaf> attn_leaves = {
                    leaf_of(DType::F32, {lora, T, n_head}, random_floats(size_t(lora * T * n_head), -2, 2)),
                    leaf_of(DType::F32, {rope, n_head, T}, random_floats(size_t(rope * n_head * T), -2, 2)),
                    leaf_of(DType::F32, {n_kv, T}, mask),
                    leaf_of(DType::F16, {width, slots}, random_floats(size_t(width * slots), -2, 2)),
                };
                auto attend = [&](Context& ctx, const std::vector<Tensor*>& t) {
                    Tensor* q_abs = scale(ctx, t[0], 0.5f);
                    Tensor* q_pe = scale(ctx, t[1], 2.0f);
                    Tensor* q = concat(ctx, permute(ctx, q_abs, 0, 2, 1, 3), q_pe, 0);  // [width, n_head, T]
                    Tensor* K = view_3d(ctx, t[3], width, n_kv, 1, t[3]->nb[1], t[3]->nb[1] * slots, 0);
                    Tensor* V = view_3d(ctx, t[3], lora, n_kv, 1, t[3]->nb[1], t[3]->nb[1] * slots, 0);
                    return flash_attn(ctx, q, K, V, t[2], 0.07f);
                };
                const std::vector<uint8_t> got = run(gpu(), attn_leaves, attend);
                CHECK(cuda_fused_nodes(gpu()) == (T == 1 ? 1u : 0u));  // the q CONCAT, for one token
                CHECK(got == run(*unfused, attn_leaves, attend));
                CHECK(cuda_fused_nodes(*unfused) == 0);
                const std::vector<float> want = as_floats(run(cpu(), attn_leaves, attend));
                const std::vector<double> want_d(want.begin(), want.end());
                CHECK(mf_test::rel_error(as_floats(got).data(), want_d.data(), want.size()) < 1e-4);

                std::vector<Leaf> store_leaves = {
                    leaf_of(DType::F16, {width, slots}, random_floats(size_t(width * slots))),
                    leaf_of(DType::F32, {lora, T}, random_floats(size_t(lora * T), -2, 2)),
                    leaf_of(DType::F32, {rope, T}, random_floats(size_t(rope * T), -2, 2)),
                    Leaf{DType::I32, {T}, std::vector<uint8_t>(size_t(T) * 4)},
                };
                for (int64_t t = 0; t < T; ++t) {  // rows near the end, out of order
                    const int32_t r = int32_t(slots - 1 - 2 * t);
                    std::memcpy(store_leaves[3].bytes.data() + 4 * t, &r, 4);
                }
                auto store = [](Context& ctx, const std::vector<Tensor*>& t) {
                    return set_rows(ctx, t[0], concat(ctx, t[1], t[2], 0), t[3]);
                };
                const std::vector<uint8_t> stored = run(gpu(), store_leaves, store);
                CHECK(cuda_fused_nodes(gpu()) == 1);
                CHECK(stored == run(*unfused, store_leaves, store));
                CHECK(stored == run(cpu(), store_leaves, store));
            }
        }
    }
}

TEST_CASE("a ROPE read only by MLA's latent-row CONCAT is applied by the cache store, not launched") {
    // q_pe and k_pe roped as arch_deepseek2 ropes them (k_pe through a reshaping view of strided rows),
    // in both modes, with and without frequency factors, at positions up to 5000: the same bits as the
    // ROPE kernel. The queries' ROPE is launched (only their CONCAT is fused).
    setenv("MINFER_CUDA_FUSE_CONCAT", "0", 1);
    std::unique_ptr<Backend> unfused = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_CONCAT");
    const int64_t lora = 512, rope_dims = 64, width = lora + rope_dims, n_head = 16;
    std::vector<float> factors(size_t(rope_dims / 2));
    for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + 0.25f * float(i % 5);
    for (RopeMode mode : {ROPE_NORMAL, ROPE_NEOX}) {
        for (bool with_factors : {false, true}) {
            for (int64_t T : {1, 3}) {
                for (int64_t n_kv : {40, 700}) {
                    CAPTURE(int(mode));
                    CAPTURE(with_factors);
                    CAPTURE(T);
                    CAPTURE(n_kv);
                    const int64_t slots = n_kv + 5;
                    const std::vector<float> mask = causal_mask(n_kv, T);
                    Leaf pos{DType::I32, {T}, std::vector<uint8_t>(size_t(T) * 4)};
                    for (int64_t t = 0; t < T; ++t) {
                        const int32_t p = int32_t(4999 - 1700 * t);
                        std::memcpy(pos.bytes.data() + 4 * t, &p, 4);
                    }
                    const std::vector<Leaf> attn_leaves = {
                        leaf_of(DType::F32, {lora, T, n_head}, random_floats(size_t(lora * T * n_head), -2, 2)),
                        leaf_of(DType::F32, {rope_dims, n_head, T},
                                random_floats(size_t(rope_dims * n_head * T), -2, 2)),
                        leaf_of(DType::F32, {n_kv, T}, mask),
                        leaf_of(DType::F16, {width, slots}, random_floats(size_t(width * slots), -2, 2)),
                        pos,
                        leaf_of(DType::F32, {rope_dims / 2}, factors),
                    };
                    auto attend = [&](Context& ctx, const std::vector<Tensor*>& t) {
                        Tensor* q_abs = scale(ctx, t[0], 0.5f);
                        Tensor* q_pe = rope(ctx, scale(ctx, t[1], 2.0f), t[4], int(rope_dims), mode, 10000.0f, 0.025f,
                                            with_factors ? t[5] : nullptr);
                        Tensor* q = concat(ctx, permute(ctx, q_abs, 0, 2, 1, 3), q_pe, 0);
                        Tensor* K = view_3d(ctx, t[3], width, n_kv, 1, t[3]->nb[1], t[3]->nb[1] * slots, 0);
                        Tensor* V = view_3d(ctx, t[3], lora, n_kv, 1, t[3]->nb[1], t[3]->nb[1] * slots, 0);
                        return flash_attn(ctx, q, K, V, t[2], 0.07f);
                    };
                    const std::vector<uint8_t> got = run(gpu(), attn_leaves, attend);
                    CHECK(cuda_fused_nodes(gpu()) == (T == 1 ? 1u : 0u));  // the CONCAT
                    CHECK(got == run(*unfused, attn_leaves, attend));
                    const std::vector<float> want = as_floats(run(cpu(), attn_leaves, attend));
                    const std::vector<double> want_d(want.begin(), want.end());
                    CHECK(mf_test::rel_error(as_floats(got).data(), want_d.data(), want.size()) < 1e-4);

                    if (n_kv != 40) continue;  // the store does not depend on it
                    std::vector<Leaf> store_leaves = {
                        leaf_of(DType::F16, {width, slots}, random_floats(size_t(width * slots))),
                        leaf_of(DType::F32, {lora, T}, random_floats(size_t(lora * T), -2, 2)),
                        leaf_of(DType::F32, {rope_dims + 8, T}, random_floats(size_t((rope_dims + 8) * T), -2, 2)),
                        Leaf{DType::I32, {T}, std::vector<uint8_t>(size_t(T) * 4)},
                        pos,
                        leaf_of(DType::F32, {rope_dims / 2}, factors),
                    };
                    for (int64_t t = 0; t < T; ++t) {
                        const int32_t r = int32_t(slots - 1 - 2 * t);
                        std::memcpy(store_leaves[3].bytes.data() + 4 * t, &r, 4);
                    }
                    for (int n_dims : {int(rope_dims), 32}) {  // 32: the row's other 32 values copied
                        CAPTURE(n_dims);
                        auto store = [&](Context& ctx, const std::vector<Tensor*>& t) {
                            // A strided view, as k_pe is of the latent projection's rows.
                            Tensor* kv = scale(ctx, t[2], 1.5f);
                            Tensor* k_in = view_3d(ctx, kv, rope_dims, 1, T, kv->nb[1], kv->nb[1], 8 * sizeof(float));
                            Tensor* k_pe = rope(ctx, k_in, t[4], n_dims, mode, 10000.0f, 0.025f,
                                                with_factors ? t[5] : nullptr);
                            return set_rows(ctx, t[0], concat(ctx, t[1], reshape_2d(ctx, k_pe, rope_dims, T), 0), t[3]);
                        };
                        const std::vector<uint8_t> stored = run(gpu(), store_leaves, store);
                        CHECK(cuda_fused_nodes(gpu()) == 2);  // the ROPE and the CONCAT
                        CHECK(stored == run(*unfused, store_leaves, store));
                    }
                }
            }
        }
    }
}

TEST_CASE("an RMS_NORM times its weight read only by MLA's latent-row CONCAT is applied by the cache store") {
    // The latent row as arch_deepseek2 builds it: c_kv = rms_norm(a view of the stacked q/kv_a
    // product) * attn_kv_a_norm and k_pe roped from a strided view of the same product, joined and
    // stored. Into a float cache neither the norm, its MUL, the ROPE nor the CONCAT is launched, and the
    // store writes the launched kernels' bits. The product's last reader is the ROPE, so the planner
    // may place the CONCAT's result over it: that result is never written. A q8_0 cache takes none of
    // these folds; the norm and its MUL are then one launch, as without them.
    setenv("MINFER_CUDA_FUSE_CONCAT", "0", 1);
    std::unique_ptr<Backend> unfused = make_cuda_backend();
    unsetenv("MINFER_CUDA_FUSE_CONCAT");
    const int64_t q_dim = 192, lora = 512, rope_dims = 64, width = lora + rope_dims, slots = 45;
    const float eps = 1e-6f;
    for (DType cache : {DType::F16, DType::BF16, DType::F32, DType::Q8_0}) {
        for (int64_t T : {1, 5}) {
            CAPTURE(dtype_name(cache));
            CAPTURE(T);
            Leaf pos{DType::I32, {T}, std::vector<uint8_t>(size_t(T) * 4)};
            Leaf rows{DType::I32, {T}, std::vector<uint8_t>(size_t(T) * 4)};
            for (int64_t t = 0; t < T; ++t) {
                const int32_t p = int32_t(4999 - 900 * t), r = int32_t(slots - 1 - 2 * t);  // rows out of order
                std::memcpy(pos.bytes.data() + 4 * t, &p, 4);
                std::memcpy(rows.bytes.data() + 4 * t, &r, 4);
            }
            const std::vector<Leaf> leaves = {
                leaf_of(cache, {width, slots}, random_floats(size_t(width * slots))),
                leaf_of(DType::F32, {q_dim + width, T}, random_floats(size_t((q_dim + width) * T), -2, 2)),
                leaf_of(DType::F32, {lora}, random_floats(size_t(lora), 0.5f, 1.5f)),
                pos,
                rows,
            };
            auto store = [&](Context& ctx, const std::vector<Tensor*>& t) {
                Tensor* both = scale(ctx, t[1], 1.5f);  // computed, as the matmul's result is
                const size_t row = both->nb[1], f32 = sizeof(float);
                Tensor* c_kv = mul(ctx, rms_norm(ctx, view_2d(ctx, both, lora, T, row, q_dim * f32), eps), t[2]);
                Tensor* k_pe = view_3d(ctx, both, rope_dims, 1, T, row, row, (q_dim + lora) * f32);
                k_pe = rope(ctx, k_pe, t[3], int(rope_dims), ROPE_NORMAL, 10000.0f, 0.025f, nullptr);
                return set_rows(ctx, t[0], concat(ctx, c_kv, reshape_2d(ctx, k_pe, rope_dims, T), 0), t[4]);
            };
            const std::vector<uint8_t> stored = run(gpu(), leaves, store);
            // The RMS_NORM, the MUL, the ROPE and the CONCAT; into q8_0 the MUL only (the norm's launch).
            CHECK(cuda_fused_nodes(gpu()) == (cache == DType::Q8_0 ? 1u : 4u));
            CHECK(stored == run(*unfused, leaves, store));
            CHECK(cuda_fused_nodes(*unfused) == 1);
            // The CPU sums the squares in another order, so a value may round to its neighbour in the
            // cache's type (q8_0: to the neighbouring step); the rows agree to well within 1e-3.
            const std::vector<float> want = mf_test::decode(cache, run(cpu(), leaves, store), width);
            const std::vector<double> want_d(want.begin(), want.end());
            CHECK(mf_test::rel_error(mf_test::decode(cache, stored, width).data(), want_d.data(), want.size()) < 1e-3);
        }
    }
}

TEST_CASE("hadamard on CUDA matches the CPU for every power-of-two row length up to 1024") {
    for (int64_t n : {2, 32, 64, 128, 256, 1024}) {
        CAPTURE(n);
        const std::vector<Leaf> leaves = {leaf_of(DType::F32, {n, 37}, random_floats(size_t(n * 37), -3, 3))};
        auto build = [](Context& ctx, const std::vector<Tensor*>& t) {
            return add(ctx, hadamard(ctx, t[0]), scale(ctx, hadamard(ctx, t[0], true), 0.5f));  // both directions
        };
        const std::vector<float> want = as_floats(run(cpu(), leaves, build));
        const std::vector<float> got = as_floats(run(gpu(), leaves, build));
        const std::vector<double> want_d(want.begin(), want.end());
        CHECK(mf_test::rel_error(got.data(), want_d.data(), want.size()) < 1e-6);
    }
}

TEST_CASE("quantized KV stores write the same bytes as the CPU's reference quantizers") {
    for (DType type : {DType::Q8_0, DType::Q4_0}) {
        CAPTURE(dtype_name(type));
        const int64_t width = 256, slots = 40, n = 7;
        const std::vector<Leaf> leaves = {
            leaf_of(type, {width, slots}, random_floats(size_t(width * slots))),
            leaf_of(DType::F32, {width, n}, random_floats(size_t(width * n), -3, 3)),
            Leaf{DType::I32, {n}, {}},
        };
        std::vector<int32_t> rows = {3, 39, 0, 17, 18, 5, 22};
        std::vector<Leaf> with_ids = leaves;
        with_ids[2].bytes.resize(rows.size() * 4);
        std::memcpy(with_ids[2].bytes.data(), rows.data(), with_ids[2].bytes.size());
        auto build = [&](Context& ctx, const std::vector<Tensor*>& t) { return set_rows(ctx, t[0], t[1], t[2]); };
        CHECK(run(gpu(), with_ids, build) == run(cpu(), with_ids, build));
    }
}

// Sessions: the same tiny model on both backends, token by token, with quantized and windowed caches.
// Tolerance as in test_gpu_model for f32 weights: 1e-3 of the largest logit, except that a quantized
// cache can round one K/V value the other way when the backends' inputs differ in the last bit, which
// attention in these random models amplifies to a few percent: 0.1 still fails on a wrong kernel.
namespace {

// The sessions' model: a tiny llama with 4 query heads over 2 KV heads.
mf_test::TinyLlama gqa_llama() {
    mf_test::TinyLlama tiny;
    tiny.n_embd = 256;
    tiny.n_ff = 512;
    tiny.n_head = 4;
    tiny.n_head_kv = 2;
    return tiny;
}

}  // namespace

namespace {

// A tiny llama session's prefill and decode steps (captured CUDA graphs from the second on) on
// `other`, a CUDA backend made with some switch, give gpu()'s logits bit for bit, for an f16 and a
// q8_0 cache. check(a, b) runs after the prefill, with a the gpu() backend.
template <typename Check>
void check_session_like_gpu(Backend& other, const char* name, Check check) {
    mf_test::TinyLlama tiny = gqa_llama();
    const std::string path = mf_test::temp_path(name);
    tiny.write(path);
    auto a_model = load_model(path, gpu());
    auto b_model = load_model(path, other);
    const std::vector<int32_t> tokens = random_tokens(24, int32_t(tiny.n_vocab));
    for (const char* type : {"f16", "q8_0"}) {
        CAPTURE(type);
        SessionParams p{32, 4};
        p.kv = KVOverrides{type, type, -1, -1};
        Session a(*a_model, p);
        Session b(*b_model, p);
        CHECK(a.prefill({tokens[0], tokens[1], tokens[2], tokens[3], tokens[4]}) ==
              b.prefill({tokens[0], tokens[1], tokens[2], tokens[3], tokens[4]}));
        check(gpu(), other);
        for (size_t i = 5; i < tokens.size(); ++i) {
            CAPTURE(i);
            CHECK(a.decode(tokens[i]) == b.decode(tokens[i]));
        }
    }
    std::remove(path.c_str());
}

}  // namespace

// build_attn flags the cache stores TENSOR_SIDE: they run on the backend's second stream beside the
// queries' ROPE, and the attention waits for them.
TEST_CASE("a session's cache stores on the second stream give the one-stream backend's logits") {
    setenv("MINFER_CUDA_SIDE", "0", 1);
    std::unique_ptr<Backend> one_stream = make_cuda_backend();
    unsetenv("MINFER_CUDA_SIDE");
    check_session_like_gpu(*one_stream, "gpu_side.gguf", [](const Backend& side, const Backend& one) {
        CHECK(cuda_side_launches(side) >= 2);  // the k and v stores of each layer
        CHECK(cuda_side_launches(one) == 0);
    });
}

// MINFER_CUDA_TWICE=OP (a measurement: each OP node launched twice) computes what one launch does.
TEST_CASE("a session with an op's launches repeated (MINFER_CUDA_TWICE) gives the same logits") {
    for (const char* op : {"MUL_MAT", "FLASH_ATTN", "ROPE", "SET_ROWS", "GET_ROWS"}) {
        CAPTURE(op);
        setenv("MINFER_CUDA_TWICE", op, 1);
        std::unique_ptr<Backend> twice = make_cuda_backend();
        unsetenv("MINFER_CUDA_TWICE");
        check_session_like_gpu(*twice, "gpu_twice.gguf", [](const Backend&, const Backend&) {});
    }
}

// A decode graph computed again unchanged (the same Graph::stamp) is replayed without its signature
// being taken again; with CUDA graphs off every step runs node by node. Both give the same logits, and
// the device's own time (time_computes, `minfer bench --busy`) is counted for them.
TEST_CASE("decode steps replayed by their graph's stamp give the logits of a backend without CUDA graphs") {
    setenv("MINFER_CUDA_GRAPHS", "0", 1);
    std::unique_ptr<Backend> plain = make_cuda_backend();
    unsetenv("MINFER_CUDA_GRAPHS");
    REQUIRE(gpu().time_computes(true));
    const double before = gpu().computed_seconds();
    check_session_like_gpu(*plain, "gpu_plain.gguf", [](const Backend&, const Backend&) {});
    CHECK(gpu().computed_seconds() > before);
    gpu().time_computes(false);
}

TEST_CASE("sessions with q8_0/q4_0 and windowed caches on CUDA match the CPU") {
    mf_test::TinyLlama tiny = gqa_llama();
    const std::string path = mf_test::temp_path("gpu_kv.gguf");
    tiny.write(path);
    auto cpu_model = load_model(path, cpu());
    auto gpu_model = load_model(path, gpu());
    struct Case {
        const char* type_k;
        const char* type_v;
        int64_t window, sinks;
        double tol;
    };
    const Case cases[] = {{"f16", "f16", -1, -1, 1e-3}, {"q8_0", "q8_0", -1, -1, 0.1}, {"q4_0", "q8_0", -1, -1, 0.1},
                          {"f16", "q4_0", 6, 2, 0.1}, {"f16", "f16", 5, 0, 1e-3}};
    const std::vector<int32_t> tokens = random_tokens(40, int32_t(tiny.n_vocab));
    for (const Case& c : cases) {
        CAPTURE(c.type_k);
        CAPTURE(c.type_v);
        CAPTURE(c.window);
        SessionParams p{32, 4};
        p.kv = KVOverrides{c.type_k, c.type_v, c.window, c.sinks};
        Session sc(*cpu_model, p);
        Session sg(*gpu_model, p);
        // With a window the 40 tokens run past n_ctx = 32 (streaming); without, stop at the context.
        const size_t n = sc.kv_plan().unbounded() ? tokens.size() : 30;
        sc.prefill({tokens[0], tokens[1], tokens[2]});
        sg.prefill({tokens[0], tokens[1], tokens[2]});
        double worst = 0;
        for (size_t i = 3; i < n; ++i) {
            const std::vector<float>& a = sc.decode(tokens[i]);
            const std::vector<float>& b = sg.decode(tokens[i]);
            double num = 0, den = 0;
            for (size_t j = 0; j < a.size(); ++j) {
                num = std::max(num, std::fabs(double(a[j]) - double(b[j])));
                den = std::max(den, std::fabs(double(a[j])));
            }
            worst = std::max(worst, num / den);
        }
        CHECK(worst < c.tol);
    }
    std::remove(path.c_str());
}
