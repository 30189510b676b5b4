// FLASH_ATTN on the CPU: attention of new queries over a KV cache of any row type, one pass with an
// online softmax, so no score matrix is materialized and a quantized cache is read in place;
// ATTN_FUSED, the same attention with a group's scores kept whole in scratch (three passes, no
// rescaling); and HADAMARD, the rotation a quantized cache stores its keys and values in.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/common.h"
#include "core/cpu/cpu_ops.h"
#include "core/ops.h"

namespace mf {

namespace {

bool supports_hadamard(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    return a && a->type == DType::F32 && a->is_contiguous() && dst->is_contiguous() && (a->ne[0] & (a->ne[0] - 1)) == 0;
}

// The signs (forward: before), the fast Walsh-Hadamard transform in place (Sylvester order), the
// 1/sqrt(n) that makes it orthonormal, the signs (inverse: after): n log n adds, no n x n product.
void compute_hadamard(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const int64_t n = a->ne[0], rows = a->nrows();
    const bool inverse = dst->op_param_i(0) != 0;
    const float norm = 1.0f / std::sqrt(float(n));
    ctx.pool.parallel_for(rows, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            const float* x = static_cast<const float*>(a->data) + r * n;
            float* y = static_cast<float*>(dst->data) + r * n;
            for (int64_t i = 0; i < n; ++i) y[i] = inverse ? x[i] : x[i] * hadamard_sign(uint32_t(i));
            for (int64_t h = 1; h < n; h *= 2)
                for (int64_t i = 0; i < n; i += 2 * h)
                    for (int64_t j = i; j < i + h; ++j) {
                        const float u = y[j], v = y[j + h];
                        y[j] = u + v;
                        y[j + h] = u - v;
                    }
            for (int64_t i = 0; i < n; ++i) y[i] *= inverse ? norm * hadamard_sign(uint32_t(i)) : norm;
        }
    }, min_rows_per_chunk(n));
}

bool supports_flash_attn(const Tensor* dst) {
    const Tensor* q = dst->src[0];
    const Tensor* k = dst->src[1];
    const Tensor* v = dst->src[2];
    const Tensor* mask = dst->src[3];
    const Tensor* tail = dst->src[4];
    if (!q || !k || !v || !mask || q->type != DType::F32 || mask->type != DType::F32) return false;
    if (q->nb[0] != sizeof(float) || mask->nb[0] != sizeof(float) || !dst->is_contiguous()) return false;
    for (DType t : {k->type, v->type})
        if (t != DType::F32 && t != DType::F16 && t != DType::Q8_0 && t != DType::Q4_0) return false;
    if (tail && (tail->type != DType::F16 || !row_loadable(tail->type, tail->nb[0]))) return false;
    return row_loadable(k->type, k->nb[0]) && row_loadable(v->type, v->nb[0]);
}

// Eight independent partial sums: the compiler vectorizes this (a single running sum it may not
// reorder).
inline float dot_f32(const float* a, const float* b, int64_t n) {
    float part[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; ++l) part[l] += a[i + l] * b[i + l];
    float s = 0.0f;
    for (; i < n; ++i) s += a[i] * b[i];
    for (int l = 0; l < 8; ++l) s += part[l];
    return s;
}

// Loads cached row j of every KV head of x ([hd, n_kv, n_head_kv]) as f32 into out [hd * n_head_kv]:
// one call when the heads sit side by side in the cache row (the KV cache's layout), else per head.
void load_position(const Tensor* x, int64_t j, float* out) {
    const int64_t hd = x->ne[0], n_heads = x->ne[2];
    const char* row = static_cast<const char*>(x->data) + j * x->nb[1];
    if (n_heads == 1 || x->nb[2] == dtype_row_size(x->type, hd)) {
        load_row_f32(x->type, row, x->nb[0], hd * n_heads, out);
        return;
    }
    for (int64_t h = 0; h < n_heads; ++h) load_row_f32(x->type, row + h * x->nb[2], x->nb[0], hd, out + h * hd);
}

// The K rows of position j as load_position gives them, each head's row [k ; tail] when the op keeps
// the rows' last values apart (src4): out [(hd_k + hd_tail) * n_head_kv].
void load_keys(const Tensor* k, const Tensor* tail, int64_t j, float* out) {
    if (!tail) return load_position(k, j, out);
    const int64_t hd = k->ne[0], hd_t = tail->ne[0];
    for (int64_t h = 0; h < k->ne[2]; ++h) {
        float* row = out + h * (hd + hd_t);
        load_row_f32(k->type, tensor_at(k, 0, j, h, 0), k->nb[0], hd, row);
        load_row_f32(tail->type, tensor_at(tail, 0, j, h, 0), tail->nb[0], hd_t, row + hd);
    }
}

// One task is one query token over one chunk of the span, for every head: a cached position's K and
// V rows are read once, whole (all KV heads side by side, one contiguous row), and serve every
// query head (GQA/MQA groups included); chunks give decode (one token) a task per thread or more.
// Within a chunk: all scores, then the exponentials, then the V rows (no per-position rescaling);
// each task leaves per query head its max, sum and weighted V sum, and a last pass merges the
// chunks with the online-softmax rule.
void compute_flash_attn(CpuContext& ctx, Tensor* dst) {
    const Tensor* q = dst->src[0];
    const Tensor* k = dst->src[1];
    const Tensor* v = dst->src[2];
    const Tensor* mask = dst->src[3];
    const Tensor* tail = dst->src[4];
    const float scale = dst->op_param_f(0);
    const int64_t hd_k = attention_key_width(dst), hd_v = v->ne[0], n_kv = k->ne[1], n_head_kv = k->ne[2];
    const int64_t n_head = q->ne[1], T = q->ne[2], group = n_head / n_head_kv;
    const int64_t want = (4 * int64_t(ctx.pool.n_threads()) + T - 1) / T;
    const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(want, (n_kv + 63) / 64));
    const int64_t chunk = (n_kv + n_chunks - 1) / n_chunks;

    // Partials: per (token, chunk, query head) max, sum, and hd_v accumulated values.
    const int64_t part_floats = 2 + hd_v;
    float* parts = static_cast<float*>(ctx.shared_scratch(size_t(T * n_chunks * n_head * part_floats) * sizeof(float)));
    // Per thread: a position's K and V rows (all KV heads) and the chunk's scores for every head.
    ctx.reserve_per_thread(size_t(n_head_kv * (hd_k + hd_v) + n_head * chunk) * sizeof(float));
    ctx.pool.parallel_for(T * n_chunks, [&](int64_t begin, int64_t end, int thread) {
        float* k_rows = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
        float* v_rows = k_rows + n_head_kv * hd_k;
        float* scores = v_rows + n_head_kv * hd_v;  // [n_head][chunk]
        for (int64_t task = begin; task < end; ++task) {
            const int64_t c = task % n_chunks, t = task / n_chunks;
            const float* mrow = reinterpret_cast<const float*>(tensor_at(mask, 0, t, 0, 0));
            const int64_t j0 = c * chunk, len = std::max<int64_t>(0, std::min(n_kv, j0 + chunk) - j0);
            float* part = parts + task * n_head * part_floats;
            // Pass 1: every visible position's score for every query head.
            for (int64_t j = 0; j < len; ++j) {
                if (mrow[j0 + j] == -INFINITY) {
                    for (int64_t h = 0; h < n_head; ++h) scores[h * chunk + j] = -INFINITY;
                    continue;
                }
                load_keys(k, tail, j0 + j, k_rows);
                for (int64_t h = 0; h < n_head; ++h) {
                    const float* qh = reinterpret_cast<const float*>(tensor_at(q, 0, h, t, 0));
                    scores[h * chunk + j] = dot_f32(qh, k_rows + (h / group) * hd_k, hd_k) * scale + mrow[j0 + j];
                }
            }
            // Pass 2: per head, the chunk's max, the exponentials (in place) and their sum.
            for (int64_t h = 0; h < n_head; ++h) {
                float* sc = scores + h * chunk;
                float m = -INFINITY;
                for (int64_t j = 0; j < len; ++j) m = std::max(m, sc[j]);
                float l = 0.0f;
                for (int64_t j = 0; j < len; ++j) l += (sc[j] = m == -INFINITY ? 0.0f : std::exp(sc[j] - m));
                part[h * part_floats] = m;
                part[h * part_floats + 1] = l;
                std::fill(part + h * part_floats + 2, part + (h + 1) * part_floats, 0.0f);
            }
            // Pass 3: the weighted V rows (one read of a position's V row for every head).
            for (int64_t j = 0; j < len; ++j) {
                if (mrow[j0 + j] == -INFINITY) continue;
                load_position(v, j0 + j, v_rows);
                for (int64_t h = 0; h < n_head; ++h) {
                    const float p = scores[h * chunk + j];
                    if (p == 0.0f) continue;
                    float* acc = part + h * part_floats + 2;
                    const float* vr = v_rows + (h / group) * hd_v;
                    for (int64_t i = 0; i < hd_v; ++i) acc[i] += p * vr[i];
                }
            }
        }
    });
    // Merge the chunks of each (token, query head), in chunk order.
    ctx.pool.parallel_for(T * n_head, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) {
            const int64_t t = r / n_head, h = r % n_head;
            const float* first = parts + (t * n_chunks * n_head + h) * part_floats;
            const int64_t stride = n_head * part_floats;  // from one chunk's partial to the next
            float m = -INFINITY;
            for (int64_t c = 0; c < n_chunks; ++c) m = std::max(m, first[c * stride]);
            float* out = reinterpret_cast<float*>(tensor_at(dst, 0, h, t, 0));
            std::fill(out, out + hd_v, 0.0f);
            float l = 0.0f;
            if (m != -INFINITY) {
                for (int64_t c = 0; c < n_chunks; ++c) {
                    const float* p = first + c * stride;
                    if (p[0] == -INFINITY) continue;
                    const float w = std::exp(p[0] - m);
                    l += p[1] * w;
                    for (int64_t i = 0; i < hd_v; ++i) out[i] += p[2 + i] * w;
                }
            }
            // A query that sees no position (fully masked) gets zeros, not 0/0.
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            for (int64_t i = 0; i < hd_v; ++i) out[i] *= inv;
        }
    });
}

// ATTN_FUSED: one KV head at one token per task, in three passes
// over the span: every query head's scores into scratch, an exact softmax over each head's row (max,
// then exp and sum), then the weighted V sum. The scores cost group * n_kv floats per thread; a row
// that scores no position keeps probability 0 everywhere and gets zeros, as FLASH_ATTN does.
void compute_attn_fused(CpuContext& ctx, Tensor* dst) {
    const Tensor* q = dst->src[0];
    const Tensor* k = dst->src[1];
    const Tensor* v = dst->src[2];
    const Tensor* mask = dst->src[3];
    const Tensor* tail = dst->src[4];
    const float scale = dst->op_param_f(0);
    const int64_t hd_k = attention_key_width(dst), hd_v = v->ne[0], n_kv = k->ne[1], n_head_kv = k->ne[2];
    const int64_t n_head = q->ne[1], T = q->ne[2], group = n_head / n_head_kv;

    // Per thread: K row, V row, the group's scores [group][n_kv] and its V sums [group][hd_v].
    const size_t floats = size_t(hd_k + hd_v + group * (n_kv + hd_v));
    ctx.reserve_per_thread(floats * sizeof(float));
    ctx.pool.parallel_for(n_head_kv * T, [&](int64_t begin, int64_t end, int thread) {
        float* k_row = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
        float* v_row = k_row + hd_k;
        float* scores = v_row + hd_v;
        float* acc = scores + group * n_kv;
        for (int64_t task = begin; task < end; ++task) {
            const int64_t hk = task % n_head_kv, t = task / n_head_kv;
            const float* mrow = reinterpret_cast<const float*>(tensor_at(mask, 0, t, 0, 0));
            // Pass 1: scores. A masked position is -inf for every head without reading its K row.
            for (int64_t j = 0; j < n_kv; ++j) {
                if (mrow[j] == -INFINITY) {
                    for (int64_t g = 0; g < group; ++g) scores[g * n_kv + j] = -INFINITY;
                    continue;
                }
                load_row_f32(k->type, tensor_at(k, 0, j, hk, 0), k->nb[0], k->ne[0], k_row);
                if (tail)
                    load_row_f32(tail->type, tensor_at(tail, 0, j, hk, 0), tail->nb[0], tail->ne[0], k_row + k->ne[0]);
                for (int64_t g = 0; g < group; ++g) {
                    const float* qh = reinterpret_cast<const float*>(tensor_at(q, 0, hk * group + g, t, 0));
                    float dot = 0.0f;
                    for (int64_t i = 0; i < hd_k; ++i) dot += qh[i] * k_row[i];
                    scores[g * n_kv + j] = dot * scale + mrow[j];
                }
            }
            // Pass 2: each head's row becomes probabilities, normalized here so pass 3 only sums.
            for (int64_t g = 0; g < group; ++g) {
                float* s = scores + g * n_kv;
                float max = -INFINITY;
                for (int64_t j = 0; j < n_kv; ++j) max = s[j] > max ? s[j] : max;
                if (max == -INFINITY) {
                    std::fill(s, s + n_kv, 0.0f);
                    continue;
                }
                double sum = 0.0;
                for (int64_t j = 0; j < n_kv; ++j) sum += (s[j] = std::exp(s[j] - max));
                const float inv = float(1.0 / sum);
                for (int64_t j = 0; j < n_kv; ++j) s[j] *= inv;
            }
            // Pass 3: V rows weighted by the probabilities, each row read once for the whole group.
            std::fill(acc, acc + group * hd_v, 0.0f);
            for (int64_t j = 0; j < n_kv; ++j) {
                if (mrow[j] == -INFINITY) continue;
                load_row_f32(v->type, tensor_at(v, 0, j, hk, 0), v->nb[0], hd_v, v_row);
                for (int64_t g = 0; g < group; ++g) {
                    const float p = scores[g * n_kv + j];
                    if (p == 0.0f) continue;
                    float* a = acc + g * hd_v;
                    for (int64_t i = 0; i < hd_v; ++i) a[i] += p * v_row[i];
                }
            }
            for (int64_t g = 0; g < group; ++g) {
                float* out = reinterpret_cast<float*>(tensor_at(dst, 0, hk * group + g, t, 0));
                std::copy(acc + g * hd_v, acc + (g + 1) * hd_v, out);
            }
        }
    });
}

}  // namespace

// ATTN_FUSED takes exactly the operands FLASH_ATTN does.
bool supports_attention(const Tensor* dst) {
    return dst->op == Op::HADAMARD ? supports_hadamard(dst) : supports_flash_attn(dst);
}

void compute_attention(CpuContext& ctx, Tensor* dst) {
    if (dst->op == Op::HADAMARD) compute_hadamard(ctx, dst);
    else if (dst->op == Op::ATTN_FUSED) compute_attn_fused(ctx, dst);
    else compute_flash_attn(ctx, dst);
}

}  // namespace mf
