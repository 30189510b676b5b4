// KV-cache plan resolution: which layers are windowed, how many rows each holds, in which types.
#include "models/kv_plan.h"

#include <algorithm>

#include "core/common.h"

namespace mf {

namespace {

const DType kKVTypes[] = {DType::F16, DType::Q8_0, DType::Q4_0};

DType parse_kv_type(const std::string& name, const char* what) {
    for (DType t : kKVTypes)
        if (name == dtype_name(t)) return t;
    throw Error(strfmt("%s: KV-cache type '%s' is not supported (supported: %s)", what, name.c_str(),
                       supported_kv_types().c_str()));
}

// The first non-empty setting wins.
const std::string& pick(const std::string& a, const std::string& b, const std::string& c) {
    return !a.empty() ? a : !b.empty() ? b : c;
}

}  // namespace

bool KVPlan::unbounded() const {
    return !layers.empty() && std::all_of(layers.begin(), layers.end(), [](const KVLayerPlan& l) { return l.windowed(); });
}

std::string supported_kv_types() {
    std::string s;
    for (DType t : kKVTypes) s += (s.empty() ? "" : ", ") + std::string(dtype_name(t));
    return s;
}

KVPlan plan_kv_cache(const HParams& hp, const KVOverrides& o, uint32_t n_ctx, uint32_t n_batch) {
    MF_ASSERT(n_ctx > 0 && n_batch > 0);
    const HParams::KVMeta& km = hp.kv_meta;
    const int64_t window = o.window >= 0 ? o.window : km.window;  // -1: the architecture's
    const int64_t sinks = o.sinks >= 0 ? o.sinks : std::max<int64_t>(km.sinks, 0);
    const char* window_from = o.window >= 0 ? "--kv-window" : "minfer.kv.window";
    if (window > (1 << 24)) throw Error(strfmt("%s: a window of %lld tokens is too large", window_from, (long long)window));
    if (sinks > (1 << 20)) throw Error(strfmt("--kv-sinks: %lld sinks are too many", (long long)sinks));
    if (sinks > 0 && window <= 0 && hp.sliding_window == 0)
        throw Error("--kv-sinks needs a window (--kv-window N): sinks are what a windowed cache keeps of the start");

    bool any_mla = false;
    for (uint32_t il = 0; il < hp.n_layer; ++il) any_mla |= hp.attn_kind(il) == AttnKind::MLA;
    if (o.mla_expanded && !any_mla) throw Error("--mla-expanded: this model has no MLA layers");

    KVPlan plan;
    plan.n_ctx = n_ctx;
    plan.n_batch = n_batch;
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        KVLayerPlan l;
        l.kind = hp.attn_kind(il);
        // Expanded MLA caches per-head K and V of the per-head sizes, one K/V head per query head.
        const bool expanded = l.kind == AttnKind::MLA && o.mla_expanded;
        if (expanded) l.kind = AttnKind::MHA;
        const uint32_t head_dim_k = expanded ? hp.head_dim_k_mla : hp.head_dim_k;
        const uint32_t head_dim_v = expanded ? hp.head_dim_v_mla : hp.head_dim_v;
        const uint32_t n_head_kv = expanded ? hp.n_head : hp.n_head_kv[il];
        // An explicit window (flag or file) applies to every layer; 0 turns windows off; otherwise
        // the architecture's local layers keep their sliding window.
        if (window > 0) l.window = uint32_t(window);
        else if (window < 0 && hp.swa_layers[il]) l.window = hp.sliding_window;
        l.sinks = l.windowed() ? uint32_t(sinks) : 0;
        const bool local = l.windowed();
        l.type_k = parse_kv_type(pick(o.type_k, local ? km.local_type_k : km.global_type_k, pick(km.type_k, "", "f16")),
                                 o.type_k.empty() ? "minfer.kv.type_k" : "-ctk");
        l.type_v = parse_kv_type(pick(o.type_v, local ? km.local_type_v : km.global_type_v, pick(km.type_v, "", "f16")),
                                 o.type_v.empty() ? "minfer.kv.type_v" : "-ctv");
        auto check_block = [](DType type, uint32_t head_dim, const char* flag) {
            if (head_dim % dtype_traits(type).block_size != 0)
                throw Error(strfmt("%s %s: the head size %u is not a multiple of its block of %lld", flag,
                                   dtype_name(type), head_dim, (long long)dtype_traits(type).block_size));
        };
        if (l.kind == AttnKind::MLA) {
            // One latent row per token, [c_kv ; k_pe] (kv_lora_rank + n_rot), is every head's K and
            // its first kv_lora_rank values their V: V has no tensor of its own and takes K's type.
            // A quantized latent quantizes c_kv alone: the roped k_pe stays f16 in rows of its own
            // (as DeepSeek's FlashMLA keeps its FP8 cache's rope part in bf16), since positions are
            // told apart by these few values.
            l.type_v = l.type_k;
            if (l.type_k != DType::F16) l.rope_apart = hp.n_rot;
            if (hp.kv_lora_rank % dtype_traits(l.type_k).block_size != 0)
                throw Error(strfmt("-ctk %s: an MLA latent's c_kv (kv_lora_rank %u) is not a multiple of its block of "
                                   "%lld; use f16", dtype_name(l.type_k), hp.kv_lora_rank,
                                   (long long)dtype_traits(l.type_k).block_size));
        } else {
            check_block(l.type_k, head_dim_k, "-ctk");
            check_block(l.type_v, head_dim_v, "-ctv");
        }
        const uint32_t hd = head_dim_k;
        const bool pow2 = hd >= 2 && (hd & (hd - 1)) == 0;
        l.rotate_k = l.type_k != DType::F16 && pow2;
        l.rotate_v = l.type_v != DType::F16 && pow2 && head_dim_v == hd;
        l.head_dim_k = head_dim_k;
        l.head_dim_v = head_dim_v;
        l.width_k = head_dim_k * n_head_kv;
        l.width_v = head_dim_v * n_head_kv;
        if (l.kind == AttnKind::MLA) {
            l.width_v = 0;  // V is a view of the K rows
            l.rotate_k = l.rotate_v = false;  // the queries are absorbed per head; nothing to rotate alike
        }
        // A windowed layer needs the window, the sinks, and room for one step's new tokens, which are
        // stored before the step attends (so the oldest token of the step still sees its window).
        // Within the -c limit a layer never needs more than n_ctx rows.
        l.n_slots = l.windowed() ? l.sinks + l.window + n_batch : n_ctx;
        plan.layers.push_back(l);
    }
    const bool unbounded = plan.unbounded();
    for (KVLayerPlan& l : plan.layers) {
        if (!unbounded) l.n_slots = std::min(l.n_slots, n_ctx);
        l.bytes = size_t(l.n_slots) * l.row_bytes();
        plan.total_bytes += l.bytes;
    }
    return plan;
}

std::string describe_kv_plan(const KVPlan& plan) {
    std::string out = strfmt("KV cache: %s, n_ctx %u%s\n", plan.unbounded() ? "every layer windowed (streaming)" : "bounded by -c",
                             plan.n_ctx, plan.unbounded() ? " (not a limit)" : "");
    out += "  layers  attention  window      sinks  rows    K type  V type  bytes/token  bytes\n";
    bool rotated = false, mla = false;
    auto same = [](const KVLayerPlan& a, const KVLayerPlan& b) {
        return a.kind == b.kind && a.window == b.window && a.sinks == b.sinks && a.n_slots == b.n_slots &&
               a.type_k == b.type_k && a.type_v == b.type_v && a.width_k == b.width_k && a.width_v == b.width_v &&
               a.rope_apart == b.rope_apart;
    };
    for (size_t i = 0; i < plan.layers.size();) {
        size_t j = i + 1;
        while (j < plan.layers.size() && same(plan.layers[i], plan.layers[j])) ++j;
        const KVLayerPlan& l = plan.layers[i];
        rotated |= l.rotate_k || l.rotate_v;
        mla |= l.kind == AttnKind::MLA;
        const std::string range = j - i == 1 ? strfmt("%zu", i) : strfmt("%zu-%zu", i, j - 1);
        const size_t per_token = l.row_bytes();
        out += strfmt("  %-7s %-10s %-11s %-6u %-7u %-7s %-7s %-12zu %.2f MiB each\n", range.c_str(),
                      attn_kind_name(l.kind), l.windowed() ? strfmt("%u", l.window).c_str() : "full", l.sinks,
                      l.n_slots, dtype_name(l.type_k), l.width_v == 0 ? "in K" : dtype_name(l.type_v), per_token,
                      l.bytes / 1048576.0);
        i = j;
    }
    out += strfmt("  total   %.2f MiB%s\n", plan.total_bytes / 1048576.0,
                  rotated ? " (quantized K/V Hadamard-rotated)" : "");
    for (const KVLayerPlan& l : plan.layers)
        if (mla && l.kind == AttnKind::MLA) {
            out += strfmt("  MLA: 1 latent row of %u values per token (c_kv %u + rope %u%s), shared by all heads; "
                          "V is its first %u\n", l.width_k, l.head_dim_v, l.width_k - l.head_dim_v,
                          l.rope_apart ? " kept in f16" : "", l.head_dim_v);
            break;
        }
    return out;
}

}  // namespace mf
