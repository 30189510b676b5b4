// The KV cache: per layer, the keys and values of cached positions in backend memory, laid out as
// its plan says (storage types, rows: n_ctx for full layers, sinks + a ring for windowed ones).
#pragma once

#include <memory>
#include <vector>

#include "core/backend.h"
#include "core/tensor.h"
#include "models/kv_plan.h"

namespace mf {

struct KVCache {
    KVPlan plan;
    Context ctx;             // owns the cache tensors
    std::vector<Tensor*> k;  // per layer type_k [width_k - rope_apart, n_slots]: a row per cached position
    std::vector<Tensor*> v;  // per layer type_v [head_dim_v * n_head_kv, n_slots]: the same rows (null for
                             // MLA: V is a view of the latent rows in k)
    std::vector<Tensor*> k_rope;  // per layer f16 [rope_apart, n_slots]: a quantized MLA latent's roped
                                  // part, its rows beside k's (null where the plan keeps it in k)
    std::unique_ptr<Buffer> buffer;
};

// Allocates the cache the plan describes on backend (plan.total_bytes in tensors, and any alignment
// padding between them), zero-filled.
std::unique_ptr<KVCache> make_kv_cache(const KVPlan& plan, Backend& backend);

}  // namespace mf
