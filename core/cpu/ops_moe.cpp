// CPU kernels of the ops the mixture-of-experts FFN added: MUL_MAT_ID (expert-indexed matmul through
// the dtype table's vec_dot, as MUL_MAT), TOP_K (routing), SUM_ROWS, DIV and SIGMOID (gate weights).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/common.h"
#include "core/cpu/cpu_ops.h"

namespace mf {

namespace {

bool is_f32(const Tensor* t) { return t && t->type == DType::F32; }

inline float load_f32(const char* p) {
    float v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline void store_f32(char* p, float v) { std::memcpy(p, &v, sizeof v); }

// ---- MUL_MAT_ID ----------------------------------------------------------------------------------

// Output rows per task, as MUL_MAT's row tile: 16 rows of a 2048-wide Q4_0 expert are ~18 KB, so a
// tile stays in L1/L2 while every token that chose the expert is dotted with it.
constexpr int64_t kTileRows = 16;

bool supports_mul_mat_id(const Tensor* dst) {
    const Tensor* w = dst->src[0];
    const Tensor* x = dst->src[1];
    const Tensor* ids = dst->src[2];
    if (!w || !is_f32(x) || !ids || ids->type != DType::I32 || !is_f32(dst)) return false;
    if (!dtype_is_known(uint32_t(w->type))) return false;
    const auto& wt = dtype_traits(w->type);
    if (!wt.vec_dot || !w->rows_contiguous()) return false;
    const DType vt = wt.vec_dot_type;
    if (vt != DType::F32 && (!dtype_is_known(uint32_t(vt)) || !dtype_traits(vt).from_float)) return false;
    if (w->ne[0] != x->ne[0] || w->ne[0] % dtype_traits(vt).block_size != 0) return false;
    const int64_t n_used = ids->ne[0], T = ids->ne[1];
    if (w->ne[3] != 1 || x->ne[3] != 1 || ids->ne[2] != 1 || ids->ne[3] != 1) return false;
    if ((x->ne[1] != 1 && x->ne[1] != n_used) || x->ne[2] != T) return false;
    if (const Tensor* wts = dst->src[3]) {
        const int32_t gate = dst->op_param_i(0);
        if (gate != int32_t(MoeGate::SLOTS) && gate != int32_t(MoeGate::SOFTMAX)) return false;
        const int64_t per_token = gate == int32_t(MoeGate::SLOTS) ? n_used : w->ne[2];
        return is_f32(wts) && wts->ne[0] == per_token && wts->ne[1] == T && dst->ne[0] == w->ne[1] &&
               dst->ne[1] == T && dst->ne[2] == 1 && dst->ne[3] == 1;
    }
    return dst->ne[0] == w->ne[1] && dst->ne[1] == n_used && dst->ne[2] == T && dst->ne[3] == 1;
}

// A weighted MUL_MAT_ID's slot weights [n_used, T] into out: src3's, or (MoeGate::SOFTMAX) each
// token's softmax over its router logits, rounded as compute_soft_max rounds it, at the slot's expert,
// times the scale as SCALE rounds it. row: n_expert floats of scratch.
template <typename IdAt>
void slot_weights(const Tensor* dst, IdAt id_at, float* out, float* row) {
    const Tensor* wts = dst->src[3];
    const int64_t n_used = dst->src[2]->ne[0], T = dst->src[2]->ne[1], n_expert = dst->src[0]->ne[2];
    const float scale = dst->op_param_f(1);
    for (int64_t t = 0; t < T; ++t) {
        if (dst->op_param_i(0) == int32_t(MoeGate::SLOTS)) {
            for (int64_t u = 0; u < n_used; ++u) out[u + n_used * t] = load_f32(tensor_at(wts, u, t, 0, 0));
            continue;
        }
        load_row_f32(DType::F32, tensor_at(wts, 0, t, 0, 0), wts->nb[0], n_expert, row);
        float max = -INFINITY;
        for (int64_t e = 0; e < n_expert; ++e) max = row[e] > max ? row[e] : max;
        if (max == -INFINITY) {  // every logit masked: zeros, as SOFT_MAX gives
            for (int64_t u = 0; u < n_used; ++u) out[u + n_used * t] = 0.0f;
            continue;
        }
        double sum = 0.0;
        for (int64_t e = 0; e < n_expert; ++e) {
            row[e] = std::exp(row[e] - max);
            sum += row[e];
        }
        const float inv_sum = float(1.0 / sum);
        for (int64_t u = 0; u < n_used; ++u) {
            const float p = row[id_at(u, t)] * inv_sum;
            out[u + n_used * t] = scale == 1.0f ? p : p * scale;
        }
    }
}

// Phase 1 converts the activation rows to the weight type's vec_dot_type once (as MUL_MAT). Phase 2
// groups the (used slot, token) pairs by expert, so a task is (expert, row tile) and dots the tile's
// weight rows with every activation that chose that expert: each selected expert's weights are read
// from memory once per op however many tokens chose it, and unselected experts not at all. With
// weights (src3), phase 2 writes the pairs' rows to scratch and phase 3 sums each token's slots in
// order, in double, each times its weight (src3's, or its share of the router's softmax: slot_weights).
void compute_mul_mat_id(CpuContext& ctx, Tensor* dst) {
    const Tensor* w = dst->src[0];
    const Tensor* x = dst->src[1];
    const Tensor* ids = dst->src[2];
    const int64_t K = w->ne[0], M = w->ne[1], n_expert = w->ne[2];
    const int64_t n_used = ids->ne[0], T = ids->ne[1], n_b = x->ne[1];
    const int64_t n_pairs = n_used * T;
    if (M == 0 || n_pairs == 0) return;
    const auto& wt = dtype_traits(w->type);
    const DType vt = wt.vec_dot_type;
    const VecDotFn vec_dot = wt.vec_dot;
    const VecDot4Fn vec_dot4 = wt.vec_dot4;
    const VecDotRows4Fn vec_dot_rows4 = wt.vec_dot_rows4;

    // Scratch: converted activations, then per expert its pairs (counting sort by expert), then (with
    // four-row dots) the activation rows again in the pairs' order, so an expert's rows are adjacent.
    const bool in_place = vt == DType::F32 && x->nb[0] == sizeof(float);
    const size_t act_row_size = dtype_row_size(vt, K);
    const int64_t n_act_rows = n_b * T;
    const size_t act_bytes = in_place ? 0 : (act_row_size * size_t(n_act_rows) + 63) / 64 * 64;
    const size_t index_bytes = sizeof(int64_t) * size_t(n_expert + 1 + n_pairs + n_expert);
    const Tensor* wts = dst->src[3];
    const size_t rows_bytes = wts ? sizeof(float) * size_t(M * n_pairs) : 0;  // the pairs' rows [M, n_used, T]
    const size_t slot_bytes = wts ? sizeof(float) * size_t(n_pairs + n_expert) : 0;  // weights, a softmax row
    // Four-row dots take four pairs of one expert (prefill; whether any expert has them is known
    // once the pairs are sorted).
    const bool four = vec_dot4 && !in_place && n_pairs >= 4;
    const size_t sorted_at = (act_bytes + index_bytes + rows_bytes + slot_bytes + 63) / 64 * 64;
    const size_t sorted_bytes = four ? act_row_size * size_t(n_pairs) : 0;
    char* scratch = static_cast<char*>(ctx.shared_scratch(sorted_at + sorted_bytes));
    char* act = scratch;
    float* pair_rows = reinterpret_cast<float*>(scratch + act_bytes + index_bytes);
    float* slot_w = pair_rows + M * n_pairs;  // [n_used, T]
    char* sorted = scratch + sorted_at;       // [n_pairs] activation rows, with four-row dots
    int64_t* first = reinterpret_cast<int64_t*>(scratch + act_bytes);  // [n_expert + 1]: offsets into pairs
    int64_t* pairs = first + n_expert + 1;                             // [n_pairs]: u + n_used * t
    int64_t* chosen = pairs + n_pairs;                                 // the experts some pair chose

    if (!in_place) {
        const size_t vt_nb0 = dtype_traits(vt).type_size;
        const bool gather = x->nb[0] != sizeof(float) && vt != DType::F32;
        if (gather) ctx.reserve_per_thread(size_t(K) * sizeof(float));
        ctx.pool.parallel_for(n_act_rows, [&](int64_t begin, int64_t end, int thread) {
            for (int64_t r = begin; r < end; ++r) {
                const char* src = tensor_at(x, 0, r % n_b, r / n_b, 0);
                char* out = act + size_t(r) * act_row_size;
                if (vt == DType::F32) {
                    load_row_f32(DType::F32, src, x->nb[0], K, reinterpret_cast<float*>(out));
                } else if (gather) {
                    float* tmp = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
                    load_row_f32(DType::F32, src, x->nb[0], K, tmp);
                    store_row_f32(vt, tmp, out, vt_nb0, K);
                } else {
                    store_row_f32(vt, reinterpret_cast<const float*>(src), out, vt_nb0, K);
                }
            }
        }, min_rows_per_chunk(K));
    }
    auto act_row = [&](int64_t b, int64_t t) -> const char* {
        if (in_place) return tensor_at(x, 0, b, t, 0);
        return act + size_t(t * n_b + b) * act_row_size;
    };
    auto id_at = [&](int64_t u, int64_t t) {
        const int32_t id = *reinterpret_cast<const int32_t*>(tensor_at(ids, u, t, 0, 0));
        MF_ASSERT_MSG(id >= 0 && id < n_expert, "mul_mat_id: expert id out of range");
        return int64_t(id);
    };

    std::fill(first, first + n_expert + 1, int64_t(0));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t u = 0; u < n_used; ++u) ++first[id_at(u, t) + 1];
    for (int64_t e = 0; e < n_expert; ++e) first[e + 1] += first[e];
    // Fill each expert's list in (t, u) order; `first` is shifted back afterwards.
    for (int64_t t = 0; t < T; ++t)
        for (int64_t u = 0; u < n_used; ++u) pairs[first[id_at(u, t)]++] = u + n_used * t;
    for (int64_t e = n_expert; e > 0; --e) first[e] = first[e - 1];
    first[0] = 0;

    // Tasks over the experts that were chosen; a task index maps to (k-th chosen expert, row tile).
    int64_t n_chosen = 0;
    for (int64_t e = 0; e < n_expert; ++e)
        if (first[e + 1] > first[e]) chosen[n_chosen++] = e;
    const int64_t n_row_tiles = (M + kTileRows - 1) / kTileRows;
    const int64_t n_tasks = n_chosen * n_row_tiles;
    // Where pair p's result row goes: the weighted sum's scratch, or dst itself.
    auto out_at = [&](int64_t p, int64_t m) -> char* {
        if (wts) return reinterpret_cast<char*>(pair_rows + pairs[p] * M + m);
        return tensor_at(dst, 0, pairs[p] % n_used, pairs[p] / n_used, 0) + m * dst->nb[0];
    };
    auto pair_act = [&](int64_t p) { return act_row(n_b == 1 ? 0 : pairs[p] % n_used, pairs[p] / n_used); };
    // Prefill: an expert's activation rows copied next to each other in the pairs' order, so that
    // four of them go through one four-row dot (its weight blocks unpacked once, each column's bits
    // those of the single-row dot, as MUL_MAT's).
    bool any_four = false;
    for (int64_t k = 0; four && k < n_chosen && !any_four; ++k) any_four = first[chosen[k] + 1] - first[chosen[k]] >= 4;
    if (any_four) {
        ctx.pool.parallel_for(n_pairs, [&](int64_t begin, int64_t end, int) {
            for (int64_t p = begin; p < end; ++p)
                std::memcpy(sorted + size_t(p) * act_row_size, pair_act(p), act_row_size);
        }, min_rows_per_chunk(K));
    }
    ctx.pool.parallel_for(n_tasks, [&](int64_t begin, int64_t end, int) {
        for (int64_t task = begin; task < end; ++task) {
            const int64_t e = chosen[task / n_row_tiles];
            const int64_t m0 = task % n_row_tiles * kTileRows, m1 = std::min(M, m0 + kTileRows);
            const char* w_expert = tensor_at(w, 0, 0, e, 0);
            int64_t p = first[e];
            if (any_four) {
                for (; p + 4 <= first[e + 1]; p += 4) {
                    const char* a = sorted + size_t(p) * act_row_size;
                    const float* a_d = act_scales4(vt, a, act_row_size, K);  // once for the tile's rows
                    for (int64_t m = m0; m < m1; ++m) {
                        float v[4];
                        vec_dot4(K, w_expert + m * w->nb[1], a, act_row_size, a_d, v);
                        for (int c = 0; c < 4; ++c) store_f32(out_at(p + c, m), v[c]);
                    }
                }
            }
            for (; p < first[e + 1]; ++p) {
                const char* a = pair_act(p);
                int64_t m = m0;
                if (vec_dot_rows4) {
                    for (; m + 4 <= m1; m += 4) {  // four weight rows a pass (decode)
                        float v[4];
                        vec_dot_rows4(K, w_expert + m * w->nb[1], w->nb[1], a, v);
                        for (int r = 0; r < 4; ++r) store_f32(out_at(p, m + r), v[r]);
                    }
                }
                for (; m < m1; ++m) store_f32(out_at(p, m), vec_dot(K, w_expert + m * w->nb[1], a));
            }
        }
    });
    if (!wts) return;
    slot_weights(dst, id_at, slot_w, slot_w + n_pairs);
    ctx.pool.parallel_for(T, [&](int64_t begin, int64_t end, int) {
        for (int64_t t = begin; t < end; ++t) {
            char* out = tensor_at(dst, 0, t, 0, 0);
            for (int64_t m = 0; m < M; ++m) {
                double sum = 0.0;
                for (int64_t u = 0; u < n_used; ++u)
                    sum += double(slot_w[u + n_used * t]) * pair_rows[(u + n_used * t) * M + m];
                store_f32(out + m * dst->nb[0], float(sum));
            }
        }
    });
}

// ---- TOP_K ---------------------------------------------------------------------------------------

bool supports_top_k(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    const int64_t k = dst->op_param_i(0);
    if (!is_f32(a) || dst->type != DType::I32 || k < 1 || k > a->ne[0]) return false;
    return dst->ne[0] == k && dst->ne[1] == a->ne[1] && dst->ne[2] == a->ne[2] && dst->ne[3] == a->ne[3];
}

// A partial sort of the row's indices. The order is total (numbers by value, then NaN; equal keys by
// index), so the result does not depend on the sort algorithm: it is what a stable descending sort
// would put first.
void compute_top_k(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const int64_t n = a->ne[0], k = dst->ne[0];
    ctx.reserve_per_thread(size_t(n) * (sizeof(int32_t) + sizeof(float)));
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int thread) {
        int32_t* idx = reinterpret_cast<int32_t*>(ctx.per_thread_scratch(thread));
        float* v = reinterpret_cast<float*>(idx + n);
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            const char* row = tensor_at(a, 0, i1, i2, i3);
            for (int64_t i = 0; i < n; ++i) {
                v[i] = load_f32(row + i * a->nb[0]);
                idx[i] = int32_t(i);
            }
            auto before = [v](int32_t p, int32_t q) {
                const bool p_nan = std::isnan(v[p]), q_nan = std::isnan(v[q]);
                if (p_nan != q_nan) return q_nan;
                if (!p_nan && v[p] != v[q]) return v[p] > v[q];
                return p < q;
            };
            std::partial_sort(idx, idx + k, idx + n, before);
            char* out = tensor_at(dst, 0, i1, i2, i3);
            for (int64_t i = 0; i < k; ++i) std::memcpy(out + i * dst->nb[0], &idx[i], sizeof(int32_t));
        }
    }, std::max<int64_t>(1, min_rows_per_chunk(n) / 4));
}

// ---- SUM_ROWS, DIV, SIGMOID ----------------------------------------------------------------------

bool supports_sum_rows(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    return is_f32(a) && is_f32(dst) && dst->ne[0] == 1 && dst->ne[1] == a->ne[1] && dst->ne[2] == a->ne[2] &&
           dst->ne[3] == a->ne[3];
}

// Rows spread over the pool; each sum is accumulated in double, so the result is the f32 rounding of
// a nearly exact sum whatever the row length.
void compute_sum_rows(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const int64_t ne0 = a->ne[0];
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            const char* row = tensor_at(a, 0, i1, i2, i3);
            double s = 0.0;
            for (int64_t i = 0; i < ne0; ++i) s += load_f32(row + i * a->nb[0]);
            store_f32(tensor_at(dst, 0, i1, i2, i3), float(s));
        }
    }, min_rows_per_chunk(ne0));
}

bool supports_div(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* b = dst->src[1];
    if (!is_f32(a) || !is_f32(b) || !is_f32(dst) || !same_shape(a, dst)) return false;
    for (int i = 0; i < MAX_DIMS; ++i)
        if (b->ne[i] == 0 || a->ne[i] % b->ne[i] != 0) return false;
    return true;
}

void compute_div(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* b = dst->src[1];
    const int64_t ne0 = dst->ne[0];
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            const char* x = tensor_at(a, 0, i1, i2, i3);
            const char* y = tensor_at(b, 0, i1 % b->ne[1], i2 % b->ne[2], i3 % b->ne[3]);
            char* z = tensor_at(dst, 0, i1, i2, i3);
            for (int64_t i = 0; i < ne0; ++i)
                store_f32(z + i * dst->nb[0], load_f32(x + i * a->nb[0]) / load_f32(y + (i % b->ne[0]) * b->nb[0]));
        }
    }, min_rows_per_chunk(ne0));
}

bool supports_sigmoid(const Tensor* dst) { return is_f32(dst->src[0]) && is_f32(dst) && same_shape(dst->src[0], dst); }

void compute_sigmoid(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const int64_t ne0 = dst->ne[0];
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            const char* x = tensor_at(a, 0, i1, i2, i3);
            char* y = tensor_at(dst, 0, i1, i2, i3);
            for (int64_t i = 0; i < ne0; ++i)
                store_f32(y + i * dst->nb[0], 1.0f / (1.0f + std::exp(-load_f32(x + i * a->nb[0]))));
        }
    }, min_rows_per_chunk(ne0));
}

}  // namespace

bool supports_moe(const Tensor* dst) {
    switch (dst->op) {
        case Op::MUL_MAT_ID: return supports_mul_mat_id(dst);
        case Op::TOP_K: return supports_top_k(dst);
        case Op::SUM_ROWS: return supports_sum_rows(dst);
        case Op::DIV: return supports_div(dst);
        case Op::SIGMOID: return supports_sigmoid(dst);
        default: return false;
    }
}

void compute_moe(CpuContext& ctx, Tensor* dst) {
    switch (dst->op) {
        case Op::MUL_MAT_ID: compute_mul_mat_id(ctx, dst); break;
        case Op::TOP_K: compute_top_k(ctx, dst); break;
        case Op::SUM_ROWS: compute_sum_rows(ctx, dst); break;
        case Op::DIV: compute_div(ctx, dst); break;
        case Op::SIGMOID: compute_sigmoid(ctx, dst); break;
        default: MF_ASSERT_MSG(false, "compute_moe: not a mixture-of-experts op");
    }
}

}  // namespace mf
