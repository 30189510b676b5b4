// The KV-cache plan: per layer the attention kind, window, sinks, K/V storage types and bytes,
// resolved from the model's metadata and the command line before anything is allocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "models/hparams.h"

namespace mf {

// Command-line overrides (-ctk, -ctv, --kv-window, --kv-sinks); "" / -1 = take the model's.
struct KVOverrides {
    std::string type_k, type_v;
    int64_t window = -1;  // tokens; 0 = full attention on every layer
    int64_t sinks = -1;   // first positions a windowed layer keeps forever
    // --mla-expanded: MLA layers cache per-head K ([W_UK c_kv ; k_pe], head_dim_k_mla values) and V
    // (W_UV c_kv, head_dim_v_mla) as an MHA layer would, instead of the latent row (for comparison).
    bool mla_expanded = false;
};

struct KVLayerPlan {
    AttnKind kind = AttnKind::MHA;
    uint32_t window = 0;    // 0: full attention; else the layer attends to the last `window` positions
    uint32_t sinks = 0;     // plus positions 0 .. sinks - 1 (window > 0 only)
    uint32_t n_slots = 0;   // rows its cache holds: n_ctx, or sinks + a ring of ring() rows
    DType type_k = DType::F16, type_v = DType::F16;
    uint32_t head_dim_k = 0, head_dim_v = 0;
    uint32_t width_k = 0, width_v = 0;  // elements per cached position: head_dim * n_head_kv
                                        // (MLA: width_k = kv_lora_rank + n_rot, width_v = 0: V is in K)
    // MLA with a quantized latent: the row's last rope_apart values (the roped k_pe) are cached apart
    // in f16 and only the rest (c_kv) in type_k; 0: the whole row in type_k.
    uint32_t rope_apart = 0;
    uint32_t n_head_kv() const { return head_dim_k ? width_k / head_dim_k : 0; }
    // Bytes one cached position takes in this layer (K, its rope part kept apart, V).
    size_t row_bytes() const {
        return dtype_row_size(type_k, width_k - rope_apart) + dtype_row_size(DType::F16, rope_apart) +
               dtype_row_size(type_v, width_v);
    }
    // A quantized K cache stores keys rotated by an orthonormal Hadamard matrix (queries get the same
    // rotation, so q.k is unchanged): it spreads the few outlier channels keys have over the whole
    // head, so a 32-value block's scale fits the typical values (head sizes that are powers of two).
    bool rotate_k = false;
    bool rotate_v = false;  // the same for a quantized V (the attention output is rotated back)
    size_t bytes = 0;                   // K + V bytes of this layer

    uint32_t ring() const { return n_slots - sinks; }
    // The cache row of position pos: sinks stay put, the rest wrap around the ring.
    uint32_t slot(uint32_t pos) const { return pos < sinks ? pos : sinks + (pos - sinks) % ring(); }
    bool windowed() const { return window > 0; }
};

struct KVPlan {
    uint32_t n_ctx = 0;    // the -c limit on positions; unbounded() lifts it
    uint32_t n_batch = 0;  // the largest number of tokens one step stores (rings leave room for it)
    std::vector<KVLayerPlan> layers;
    size_t total_bytes = 0;

    // Every layer windowed: memory stays bounded however long a conversation runs (streaming).
    bool unbounded() const;
};

// The K/V storage types a cache may use (every backend runs all of them): "f16, q8_0, q4_0".
std::string supported_kv_types();

// Resolves the plan: flags over minfer.kv.* metadata over the architecture's sliding window over
// full f16. Throws Error on an unknown type, a type whose block does not fit the head size, or a
// window/sinks that do not make sense, naming the flag or key.
KVPlan plan_kv_cache(const HParams& hp, const KVOverrides& o, uint32_t n_ctx, uint32_t n_batch);

// The plan as a table (one line per run of identical layers) and a total, for info and chat --verbose.
std::string describe_kv_plan(const KVPlan& plan);

}  // namespace mf
