// The attention variants `minfer attn-lab` compares (MHA, GQA-k, MQA, MLA-r on one base shape) and
// what it counts about them without running anything: parameters, KV bytes, bytes read per token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/hparams.h"
#include "models/kv_plan.h"
#include "models/model.h"
#include "models/synth.h"

namespace mf {

class GGUFFile;

struct AttnVariant {
    std::string name;           // "MHA", "GQA-4", "MQA", "MLA-256"
    AttnKind kind = AttnKind::MHA;
    uint32_t n_head_kv = 0;     // K/V heads; 0 for MLA
    uint32_t kv_lora_rank = 0;  // MLA's latent rank; 0 otherwise
};

// MHA (n_head_kv = n_head), GQA-k for each k in gqa (n_head_kv = n_head / k; a k that does not divide
// n_head, or that gives MHA or MQA again, is left out with a reason appended to *skipped), MQA
// (n_head_kv = 1), then MLA-r for each r in mla. Throws Error on n_head 0 or a rank of 0.
std::vector<AttnVariant> attn_variants(uint32_t n_head, const std::vector<uint32_t>& gqa,
                                       const std::vector<uint32_t>& mla, std::vector<std::string>* skipped);

// Writes variant v of the base model (base's shape or dims, type, layers, seed; its path, n_head_kv
// and kv_lora_rank are replaced) to path. Throws as write_synth_model.
SynthSummary write_attn_variant(const SynthOptions& base, const AttnVariant& v, const std::string& path);

struct ParamCounts {
    uint64_t attn = 0;   // elements of the attention tensors: every blk.N.attn_* except attn_norm
    uint64_t total = 0;  // elements of all tensors
};
ParamCounts count_params(const GGUFFile& file);

struct KVBytesPerToken {
    size_t layer = 0;  // K + V bytes one cached position takes in one layer (layer 0)
    size_t model = 0;  // the same summed over every layer
};
// Both caches in type ("f16", "q8_0", "q4_0"), from plan_kv_cache. Throws Error where the type's
// block does not fit the head (or MLA latent) size.
KVBytesPerToken kv_bytes_per_token(const HParams& hp, const std::string& type);

// Bytes one decode step reads: every weight once (only one row of a token embedding that is not
// also the output matrix, only the n_expert_used routed experts of an MoE layer) plus the cached K/V rows of avg_positions positions in every layer (those
// a windowed layer still sees), in the plan's types.
double decode_bytes_per_token(const Model& model, const KVPlan& plan, double avg_positions);

}  // namespace mf
