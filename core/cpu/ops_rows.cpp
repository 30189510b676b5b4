// CPU kernels that move rows between types: GET_ROWS (embedding lookup from any computable type),
// SET_ROWS (rows written at positions given as data: KV-cache stores), CPY (convert, make contiguous,
// write into a view), plus the row converters.
#include <algorithm>
#include <cstring>

#include "core/common.h"
#include "core/cpu/cpu_ops.h"

namespace mf {

namespace {

bool is_scalar_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

size_t scalar_size(DType t) { return t == DType::F32 ? 4 : 2; }

// Copies row bytes of one type without converting (exact for block types, whose requantization
// would lose precision). Block rows are packed; scalar rows may be strided.
void copy_row_same_type(DType type, const char* src, size_t src_nb0, char* dst, size_t dst_nb0, int64_t n) {
    if (!is_scalar_float(type)) {
        std::memcpy(dst, src, dtype_row_size(type, n));
        return;
    }
    const size_t es = scalar_size(type);
    if (src_nb0 == es && dst_nb0 == es) {
        std::memcpy(dst, src, size_t(n) * es);
        return;
    }
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * dst_nb0, src + i * src_nb0, es);
}

// ---- GET_ROWS ------------------------------------------------------------------------------------

bool supports_get_rows(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* ids = dst->src[1];
    if (!a || !ids || ids->type != DType::I32 || dst->type != DType::F32) return false;
    if (!row_loadable(a->type, a->nb[0]) || !row_storable(DType::F32, dst->nb[0])) return false;
    return dst->ne[0] == a->ne[0] && dst->ne[1] == ids->ne[0] && dst->ne[2] == ids->ne[1] &&
           dst->ne[3] == ids->ne[2] && ids->ne[3] == 1 && a->ne[2] == ids->ne[1] && a->ne[3] == ids->ne[2];
}

void compute_get_rows(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    const Tensor* ids = dst->src[1];
    const int64_t ne0 = dst->ne[0];
    const bool direct = dst->nb[0] == sizeof(float);
    if (!direct) ctx.reserve_per_thread(size_t(ne0) * sizeof(float));
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int thread) {
        for (int64_t r = begin; r < end; ++r) {
            int64_t i1, i2, i3;
            unravel_row(dst->ne, r, &i1, &i2, &i3);
            const int32_t id = *reinterpret_cast<const int32_t*>(tensor_at(ids, i1, i2, i3, 0));
            MF_ASSERT_MSG(id >= 0 && id < a->ne[1], "get_rows: row id out of range");
            const char* src_row = tensor_at(a, 0, id, i2, i3);
            char* dst_row = tensor_at(dst, 0, i1, i2, i3);
            if (direct) {
                load_row_f32(a->type, src_row, a->nb[0], ne0, reinterpret_cast<float*>(dst_row));
            } else {
                float* tmp = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
                load_row_f32(a->type, src_row, a->nb[0], ne0, tmp);
                store_row_f32(DType::F32, tmp, dst_row, dst->nb[0], ne0);
            }
        }
    }, min_rows_per_chunk(ne0));
}

// ---- CPY -----------------------------------------------------------------------------------------

bool supports_cpy(const Tensor* dst) {
    const Tensor* a = dst->src[0];
    if (!a || a->nelements() != dst->nelements()) return false;
    return row_loadable(a->type, a->nb[0]) && row_storable(dst->type, dst->nb[0]);
}

// Rows of equal length map one to one in row-major order: the usual case (cast, cont, cache write).
void cpy_by_rows(CpuContext& ctx, const Tensor* a, Tensor* dst) {
    const int64_t ne0 = dst->ne[0];
    const bool same_type = a->type == dst->type;
    if (!same_type) ctx.reserve_per_thread(size_t(ne0) * sizeof(float));
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int thread) {
        for (int64_t r = begin; r < end; ++r) {
            int64_t d1, d2, d3, s1, s2, s3;
            unravel_row(dst->ne, r, &d1, &d2, &d3);
            unravel_row(a->ne, r, &s1, &s2, &s3);
            const char* src_row = tensor_at(a, 0, s1, s2, s3);
            char* dst_row = tensor_at(dst, 0, d1, d2, d3);
            if (same_type) {
                copy_row_same_type(a->type, src_row, a->nb[0], dst_row, dst->nb[0], ne0);
            } else {
                float* tmp = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
                load_row_f32(a->type, src_row, a->nb[0], ne0, tmp);
                store_row_f32(dst->type, tmp, dst_row, dst->nb[0], ne0);
            }
        }
    }, min_rows_per_chunk(ne0));
}

// Rows of different lengths (a reshape folded into the copy): each destination row gathers its
// elements in row-major order from however many source rows they span, through f32.
void cpy_by_elements(CpuContext& ctx, const Tensor* a, Tensor* dst) {
    const int64_t src_ne0 = a->ne[0];
    const int64_t dst_ne0 = dst->ne[0];
    ctx.reserve_per_thread(size_t(src_ne0 + dst_ne0) * sizeof(float));
    ctx.pool.parallel_for(dst->nrows(), [&](int64_t begin, int64_t end, int thread) {
        float* src_buf = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
        float* dst_buf = src_buf + src_ne0;
        int64_t loaded_row = -1;
        for (int64_t r = begin; r < end; ++r) {
            for (int64_t k = r * dst_ne0, k_end = k + dst_ne0; k < k_end;) {
                const int64_t src_row = k / src_ne0;
                const int64_t offset = k % src_ne0;
                const int64_t take = std::min(src_ne0 - offset, k_end - k);
                if (src_row != loaded_row) {
                    int64_t s1, s2, s3;
                    unravel_row(a->ne, src_row, &s1, &s2, &s3);
                    load_row_f32(a->type, tensor_at(a, 0, s1, s2, s3), a->nb[0], src_ne0, src_buf);
                    loaded_row = src_row;
                }
                std::memcpy(dst_buf + (k - r * dst_ne0), src_buf + offset, size_t(take) * sizeof(float));
                k += take;
            }
            int64_t d1, d2, d3;
            unravel_row(dst->ne, r, &d1, &d2, &d3);
            store_row_f32(dst->type, dst_buf, tensor_at(dst, 0, d1, d2, d3), dst->nb[0], dst_ne0);
        }
    }, min_rows_per_chunk(dst_ne0));
}

void compute_cpy(CpuContext& ctx, Tensor* dst) {
    const Tensor* a = dst->src[0];
    if (a->ne[0] == dst->ne[0]) {
        cpy_by_rows(ctx, a, dst);
    } else {
        cpy_by_elements(ctx, a, dst);
    }
}

}  // namespace

bool row_loadable(DType type, size_t nb0) {
    if (is_scalar_float(type)) return true;
    if (!dtype_is_known(uint32_t(type))) return false;
    const auto& tr = dtype_traits(type);
    return tr.is_quantized && tr.to_float && nb0 == tr.type_size;
}

bool row_storable(DType type, size_t nb0) {
    if (is_scalar_float(type)) return true;
    if (!dtype_is_known(uint32_t(type))) return false;
    const auto& tr = dtype_traits(type);
    return tr.is_quantized && tr.from_float && nb0 == tr.type_size;
}

void load_row_f32(DType type, const char* row, size_t nb0, int64_t n, float* out) {
    switch (type) {
        case DType::F32:
            if (nb0 == sizeof(float)) {
                std::memcpy(out, row, size_t(n) * sizeof(float));
            } else {
                for (int64_t i = 0; i < n; ++i) std::memcpy(&out[i], row + i * nb0, sizeof(float));
            }
            return;
        case DType::F16:
            if (nb0 == 2 && dtype_traits(type).to_float) break;  // the table's converter is vectorized
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, row + i * nb0, 2);
                out[i] = fp16_to_fp32(h);
            }
            return;
        case DType::BF16:
            if (nb0 == 2 && dtype_traits(type).to_float) break;
            for (int64_t i = 0; i < n; ++i) {
                uint16_t h;
                std::memcpy(&h, row + i * nb0, 2);
                out[i] = bf16_to_fp32(h);
            }
            return;
        default: break;
    }
    dtype_traits(type).to_float(row, out, n);
}

void store_row_f32(DType type, const float* in, char* row, size_t nb0, int64_t n) {
    switch (type) {
        case DType::F32:
            if (nb0 == sizeof(float)) {
                std::memcpy(row, in, size_t(n) * sizeof(float));
            } else {
                for (int64_t i = 0; i < n; ++i) std::memcpy(row + i * nb0, &in[i], sizeof(float));
            }
            return;
        case DType::F16:
            if (nb0 == 2 && dtype_traits(type).from_float) break;
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = fp32_to_fp16(in[i]);
                std::memcpy(row + i * nb0, &h, 2);
            }
            return;
        case DType::BF16:
            if (nb0 == 2 && dtype_traits(type).from_float) break;
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = fp32_to_bf16(in[i]);
                std::memcpy(row + i * nb0, &h, 2);
            }
            return;
        default: break;
    }
    dtype_traits(type).from_float(in, row, n);
}

// ---- SET_ROWS --------------------------------------------------------------------------------------

bool supports_set_rows(const Tensor* dst) {
    const Tensor* src = dst->src[1];
    const Tensor* ids = dst->src[2];
    if (!src || !ids || src->type != DType::F32 || ids->type != DType::I32) return false;
    if (!row_loadable(DType::F32, src->nb[0]) || !row_storable(dst->type, dst->nb[0])) return false;
    return dst->ne[2] == 1 && dst->ne[3] == 1 && src->ne[0] == dst->ne[0] && ids->ne[0] == src->ne[1];
}

void compute_set_rows(CpuContext& ctx, Tensor* dst) {
    const Tensor* src = dst->src[1];
    const Tensor* ids = dst->src[2];
    const int64_t ne0 = dst->ne[0];
    ctx.reserve_per_thread(size_t(ne0) * sizeof(float));
    ctx.pool.parallel_for(src->ne[1], [&](int64_t begin, int64_t end, int thread) {
        float* tmp = reinterpret_cast<float*>(ctx.per_thread_scratch(thread));
        for (int64_t i = begin; i < end; ++i) {
            const int32_t id = *reinterpret_cast<const int32_t*>(tensor_at(ids, i, 0, 0, 0));
            MF_ASSERT_MSG(id >= 0 && id < dst->ne[1], "set_rows: row id out of range");
            load_row_f32(DType::F32, tensor_at(src, 0, i, 0, 0), src->nb[0], ne0, tmp);
            store_row_f32(dst->type, tmp, tensor_at(dst, 0, id, 0, 0), dst->nb[0], ne0);
        }
    }, min_rows_per_chunk(ne0));
}

bool supports_rows(const Tensor* dst) {
    switch (dst->op) {
        case Op::GET_ROWS: return supports_get_rows(dst);
        case Op::SET_ROWS: return supports_set_rows(dst);
        case Op::CPY: return supports_cpy(dst);
        default: return false;
    }
}

void compute_rows(CpuContext& ctx, Tensor* dst) {
    switch (dst->op) {
        case Op::GET_ROWS: compute_get_rows(ctx, dst); break;
        case Op::SET_ROWS: compute_set_rows(ctx, dst); break;
        case Op::CPY: compute_cpy(ctx, dst); break;
        default: MF_ASSERT_MSG(false, "compute_rows: not a row op");
    }
}

}  // namespace mf
