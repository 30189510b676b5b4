// The KV cache: per layer, the keys and values of every past position, in backend memory.
// Plain f16 for now; the plan (kinds, windows, quantized types) grows in the KV-cache issue.
#pragma once

#include <memory>
#include <vector>

#include "core/backend.h"
#include "core/tensor.h"
#include "models/hparams.h"

namespace mf {

struct KVCache {
    uint32_t n_ctx = 0;            // positions it holds
    Context ctx;                   // owns the cache tensors
    std::vector<Tensor*> k;        // per layer f16 [head_dim_k * n_head_kv, n_ctx]: one row per position
    std::vector<Tensor*> v;        // per layer f16 [n_ctx, head_dim_v * n_head_kv]: one row per channel
                                   // (transposed, so attention's probability-times-V product reads rows)
    std::unique_ptr<Buffer> buffer;
    size_t bytes = 0;
};

// Bytes a cache of n_ctx positions needs, computed before anything is allocated.
size_t kv_cache_bytes(const HParams& hp, uint32_t n_ctx);
// Allocates the cache on backend.
std::unique_ptr<KVCache> make_kv_cache(const HParams& hp, Backend& backend, uint32_t n_ctx);

}  // namespace mf
