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
        Tensor* k = kv->ctx.new_tensor_2d(l.type_k, l.width_k - l.rope_apart, l.n_slots);
        k->name = strfmt("cache_k.%zu", il);
        k->flags |= TENSOR_PARAM;
        kv->k.push_back(k);
        all.push_back(k);
        Tensor* k_rope = nullptr;
        if (l.rope_apart > 0) {
            k_rope = kv->ctx.new_tensor_2d(DType::F16, l.rope_apart, l.n_slots);
            k_rope->name = strfmt("cache_k_rope.%zu", il);
            k_rope->flags |= TENSOR_PARAM;
            all.push_back(k_rope);
        }
        kv->k_rope.push_back(k_rope);
        Tensor* v = nullptr;
        if (l.width_v > 0) {  // MLA layers have none: V is a view of the K rows
            v = kv->ctx.new_tensor_2d(l.type_v, l.width_v, l.n_slots);
            v->name = strfmt("cache_v.%zu", il);
            v->flags |= TENSOR_PARAM;
            all.push_back(v);
        }
        kv->v.push_back(v);
    }
    kv->buffer = allocate_tensors(backend, all);
    // Rows never written are masked out, but keep them finite anyway: fresh device memory may hold
    // anything, and a kernel that multiplies a masked row by zero would turn NaN into NaN.
    size_t largest = 0;
    for (Tensor* t : all) largest = std::max(largest, t->nbytes());
    const std::vector<uint8_t> zeros(largest, 0);
    for (Tensor* t : all) tensor_set(t, zeros.data());
    return kv;
}

}  // namespace mf
