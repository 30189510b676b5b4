// MLA decode attention on the tensor cores (cuda/mla.cu), the kernel launch_flash_attn picks for
// DeepSeek-style latent rows: K a row of kv_lora_rank + rope f16 values, V the row's first values.
#pragma once

#include "core/dtype.h"
#include "cuda/common.cuh"

namespace mf {

// Whether the MLA kernel covers this attention: f16 latent rows of 576/512 (DeepSeek-V2/V3), 288/256
// or 544/512 (attn-lab), V each K row's prefix, rows 16-byte aligned, one token. MINFER_CUDA_FA_TILE=0
// turns it off with the tile kernel.
bool mla_kernel_fits(DType type_k, DType type_v, const Shape4& qs, const void* k, const Shape4& ks, const void* v,
                     const Shape4& vs);

// The MLA kernel's grid: blocks of 16 query heads, times splits of the positions. One block an SM
// fits (the tiles take ~190 KB); about one wave of them, a tile each at least.
struct MlaGrid {
    int64_t blocks;
    int n_splits;
};
MlaGrid mla_grid(const Shape4& qs, const Shape4& ks);

// q [DK, n_head, 1] (one tensor or two side by side), k the latent rows [DK, n_kv, 1] (V their first
// DV values), mask f32 [n_kv] -> out f32 [DV, n_head]; ws: flash_attn_workspace_bytes of scratch
// (the splits' partial rows, combined by launch_attn_combine). Only where mla_kernel_fits.
void launch_mla(const RowsF32& q, const Shape4& qs, const void* k, const Shape4& ks, const float* mask, float* out,
                float* ws, float scale, cudaStream_t stream);

}  // namespace mf
