// attn-lab's variant list and its counts: which variants a head count allows, the synth file of
// each, parameters by tensor name, and KV and decode bytes per token from the resolved KV plan.
#include "models/attn_lab.h"

#include <algorithm>

#include "core/common.h"
#include "core/gguf.h"

namespace mf {

std::vector<AttnVariant> attn_variants(uint32_t n_head, const std::vector<uint32_t>& gqa,
                                       const std::vector<uint32_t>& mla, std::vector<std::string>* skipped) {
    if (n_head == 0) throw Error("attention variants: the base has no heads");
    std::vector<AttnVariant> out;
    out.push_back({"MHA", AttnKind::MHA, n_head, 0});
    const auto skip = [&](const std::string& why) {
        if (skipped) skipped->push_back(why);
    };
    for (uint32_t k : gqa) {
        const std::string name = strfmt("GQA-%u", k);
        if (k == 0 || n_head % k != 0) {
            skip(strfmt("%s: %u query heads do not split into groups of %u", name.c_str(), n_head, k));
        } else if (k == 1 || k == n_head) {
            skip(strfmt("%s: n_head_kv = %u is %s", name.c_str(), n_head / k, k == 1 ? "MHA" : "MQA"));
        } else if (std::any_of(out.begin(), out.end(), [&](const AttnVariant& v) { return v.name == name; })) {
            skip(name + ": listed twice");
        } else {
            out.push_back({name, AttnKind::GQA, n_head / k, 0});
        }
    }
    if (n_head > 1) out.push_back({"MQA", AttnKind::MQA, 1, 0});
    for (uint32_t r : mla) {
        if (r == 0) throw Error("attention variants: an MLA latent rank must be positive");
        const std::string name = strfmt("MLA-%u", r);
        if (std::any_of(out.begin(), out.end(), [&](const AttnVariant& v) { return v.name == name; })) {
            skip(name + ": listed twice");
            continue;
        }
        out.push_back({name, AttnKind::MLA, 0, r});
    }
    return out;
}

SynthSummary write_attn_variant(const SynthOptions& base, const AttnVariant& v, const std::string& path) {
    SynthOptions o = base;
    o.path = path;
    o.n_head_kv = v.kind == AttnKind::MLA ? 0 : v.n_head_kv;
    o.kv_lora_rank = v.kind == AttnKind::MLA ? v.kv_lora_rank : 0;
    return write_synth_model(o);
}

ParamCounts count_params(const GGUFFile& file) {
    ParamCounts c;
    for (size_t i = 0; i < file.n_tensors(); ++i) {
        const GGUFTensorInfo& t = file.tensor(i);
        const uint64_t n = uint64_t(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
        c.total += n;
        const std::string& name = t.name;
        const size_t dot = name.find('.', 4);
        if (name.rfind("blk.", 0) == 0 && dot != std::string::npos && name.compare(dot + 1, 5, "attn_") == 0 &&
            name.compare(dot + 1, 10, "attn_norm.") != 0)
            c.attn += n;
    }
    return c;
}

KVBytesPerToken kv_bytes_per_token(const HParams& hp, const std::string& type) {
    KVOverrides o;
    o.type_k = o.type_v = type;
    const KVPlan plan = plan_kv_cache(hp, o, 1, 1);
    KVBytesPerToken b;
    for (size_t il = 0; il < plan.layers.size(); ++il) {
        const KVLayerPlan& l = plan.layers[il];
        const size_t per = l.row_bytes();
        if (il == 0) b.layer = per;
        b.model += per;
    }
    return b;
}

double decode_bytes_per_token(const Model& m, const KVPlan& plan, double avg_positions) {
    double bytes = 0;
    for (const Tensor& t : m.ctx.tensors())
        if (!t.view_src) bytes += double(t.nbytes());  // a view (a stacked q/k/v part) shares its matrix's bytes
    // Routed experts: a token reads only the n_expert_used experts it is sent to.
    if (m.hp.n_expert > 0) {
        const double unread = 1.0 - double(m.hp.n_expert_used) / double(m.hp.n_expert);
        for (const LayerWeights& l : m.layers)
            for (const Tensor* t : {l.ffn_gate_exps, l.ffn_up_exps, l.ffn_down_exps})
                // Rows times row size: a stacked part's extent (nbytes) spans its partner's rows too.
                if (t) bytes -= unread * double(dtype_row_size(t->type, t->ne[0])) * double(t->nrows());
    }
    if (m.output != m.tok_embd) bytes -= double(m.tok_embd->nbytes()) - double(m.tok_embd->nb[1]);
    for (const KVLayerPlan& l : plan.layers) {
        const double seen = l.windowed() ? std::min(avg_positions, double(l.window + l.sinks)) : avg_positions;
        bytes += seen * double(l.row_bytes());
    }
    return bytes;
}

}  // namespace mf
