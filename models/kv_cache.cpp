// KV cache allocation from a plan.
#include "models/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/common.h"

namespace mf {

std::unique_ptr<KVCache> make_kv_cache(const KVPlan& plan, Backend& backend) {
    auto kv = std::make_unique<KVCache>();
    kv->plan = plan;
    std::vector<Tensor*> all;
    for (size_t il = 0; il < plan.layers.size(); ++il) {
        const KVLayerPlan& l = plan.layers[il];
        Tensor* k = kv->ctx.new_tensor_2d(l.type_k, l.width_k, l.n_slots);
        k->name = strfmt("cache_k.%zu", il);
        k->flags |= TENSOR_PARAM;
        kv->k.push_back(k);
        all.push_back(k);
        Tensor* v = nullptr;
        if (l.width_v > 0) {  // MLA layers have none: V is a view of the K rows
            v = kv->ctx.new_tensor_2d(l.type_v, l.width_v, l.n_slots);
            v->name = strfmt("cache_v.%zu", il);
            v->flags |= TENSOR_PARAM;
            all.push_back(v);
        }
        kv->v.push_back(v);
    }
    uint32_t hd = 0;
    for (const KVLayerPlan& l : plan.layers)
        if (l.rotate_k || l.rotate_v) hd = l.head_dim_k;
    if (hd) {
        kv->hadamard = kv->ctx.new_tensor_2d(DType::F32, hd, hd);
        kv->hadamard->name = "kv_hadamard";
        kv->hadamard->flags |= TENSOR_PARAM;
    }
    std::vector<Tensor*> all_with_h = all;
    if (kv->hadamard) all_with_h.push_back(kv->hadamard);
    kv->buffer = allocate_tensors(backend, all_with_h);
    if (kv->hadamard) {
        // Sylvester's construction: H[i][j] = (-1)^popcount(i & j) / sqrt(hd), symmetric and orthonormal.
        std::vector<float> h(size_t(hd) * hd);
        const float norm = 1.0f / std::sqrt(float(hd));
        for (uint32_t i = 0; i < hd; ++i)
            for (uint32_t j = 0; j < hd; ++j) h[size_t(i) * hd + j] = (__builtin_popcount(i & j) & 1) ? -norm : norm;
        tensor_set(kv->hadamard, h.data());
    }
    // Rows never written are masked out, but keep them finite anyway: fresh device memory may hold
    // anything, and a kernel that multiplies a masked row by zero would turn NaN into NaN.
    size_t largest = 0;
    for (Tensor* t : all) largest = std::max(largest, t->nbytes());
    const std::vector<uint8_t> zeros(largest, 0);
    for (Tensor* t : all) tensor_set(t, zeros.data());
    return kv;
}

}  // namespace mf
