// KV cache sizing and allocation.
#include "models/kv_cache.h"

#include <algorithm>
#include <vector>

#include "core/common.h"

namespace mf {

size_t kv_cache_bytes(const HParams& hp, uint32_t n_ctx) {
    size_t total = 0;
    for (uint32_t il = 0; il < hp.n_layer; ++il)
        total += size_t(n_ctx) * hp.n_head_kv[il] * (hp.head_dim_k + hp.head_dim_v) * sizeof(uint16_t);
    return total;
}

std::unique_ptr<KVCache> make_kv_cache(const HParams& hp, Backend& backend, uint32_t n_ctx) {
    MF_ASSERT(n_ctx > 0);
    auto kv = std::make_unique<KVCache>();
    kv->n_ctx = n_ctx;
    std::vector<Tensor*> all;
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        Tensor* k = kv->ctx.new_tensor_2d(DType::F16, int64_t(hp.head_dim_k) * hp.n_head_kv[il], n_ctx);
        Tensor* v = kv->ctx.new_tensor_2d(DType::F16, n_ctx, int64_t(hp.head_dim_v) * hp.n_head_kv[il]);
        k->name = strfmt("cache_k.%u", il);
        v->name = strfmt("cache_v.%u", il);
        k->flags |= TENSOR_PARAM;
        v->flags |= TENSOR_PARAM;
        kv->k.push_back(k);
        kv->v.push_back(v);
        all.push_back(k);
        all.push_back(v);
    }
    kv->buffer = allocate_tensors(backend, all);
    // Attention reads spans padded past the last written position, masked out; they must hold finite
    // numbers (0 * NaN is NaN), and fresh device memory may hold anything.
    size_t largest = 0;
    for (Tensor* t : all) largest = std::max(largest, t->nbytes());
    const std::vector<uint8_t> zeros(largest, 0);
    for (Tensor* t : all) tensor_set(t, zeros.data());
    kv->bytes = kv_cache_bytes(hp, n_ctx);
    return kv;
}

}  // namespace mf
