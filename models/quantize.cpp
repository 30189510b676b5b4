// Model quantization: the per-tensor type plan (llama.cpp's llama_tensor_get_type rules for the types
// minfer computes with) and the streaming writer that converts each tensor's rows on a thread pool.
#include "models/quantize.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core/common.h"
#include "core/cpu/threadpool.h"
#include "core/quants.h"

namespace mf {

namespace {

// general.file_type values (llama.h, enum llama_ftype). llama.cpp has no "uniform Q4_K" file type:
// q4_k is written as Q4_K_S, the nearest "mostly Q4_K" one; q5_k's plan is exactly Q5_K_S's.
constexpr uint32_t FTYPE_Q4_0 = 2, FTYPE_Q4_1 = 3, FTYPE_Q8_0 = 7, FTYPE_Q5_0 = 8, FTYPE_Q5_1 = 9,
                   FTYPE_Q4_K_S = 14, FTYPE_Q4_K_M = 15, FTYPE_Q5_K_S = 16, FTYPE_Q5_K_M = 17, FTYPE_Q6_K = 18;
constexpr uint32_t kQuantizationVersion = 2;  // GGML_QNT_VERSION: the current block layouts

const std::vector<QuantScheme>& schemes() {
    static const std::vector<QuantScheme> s = {
        {"q8_0", DType::Q8_0, QuantMix::UNIFORM, FTYPE_Q8_0},
        {"q4_0", DType::Q4_0, QuantMix::UNIFORM, FTYPE_Q4_0},
        {"q4_1", DType::Q4_1, QuantMix::UNIFORM, FTYPE_Q4_1},
        {"q5_0", DType::Q5_0, QuantMix::UNIFORM, FTYPE_Q5_0},
        {"q5_1", DType::Q5_1, QuantMix::UNIFORM, FTYPE_Q5_1},
        {"q4_k", DType::Q4_K, QuantMix::UNIFORM, FTYPE_Q4_K_S},
        {"q5_k", DType::Q5_K, QuantMix::UNIFORM, FTYPE_Q5_K_S},
        {"q6_k", DType::Q6_K, QuantMix::UNIFORM, FTYPE_Q6_K},
        {"q4_k_s", DType::Q4_K, QuantMix::K_S, FTYPE_Q4_K_S},
        {"q4_k_m", DType::Q4_K, QuantMix::K_M, FTYPE_Q4_K_M},
        {"q5_k_s", DType::Q5_K, QuantMix::K_S, FTYPE_Q5_K_S},
        {"q5_k_m", DType::Q5_K, QuantMix::K_M, FTYPE_Q5_K_M},
    };
    return s;
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

bool ends_with(const std::string& s, const char* suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// The layer index of a "blk.N." name, or -1.
int layer_of(const std::string& name) {
    if (name.compare(0, 4, "blk.") != 0) return -1;
    size_t i = 4;
    long v = 0;
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && v < 1000000)
        v = v * 10 + (name[i++] - '0');
    return i > 4 && i < name.size() && name[i] == '.' ? int(v) : -1;
}

// Dimensions that are not 1, as ggml_n_dims counts them (a [n, 1] tensor is a vector).
int effective_dims(const GGUFTensorInfo& t) {
    int n = 1;
    for (int d = 1; d < GGUF_MAX_DIMS; ++d)
        if (t.ne[d] > 1) n = d + 1;
    return n;
}

// llama.cpp quantizes a tensor only when its name ends in "weight", it has two or more dimensions,
// and it is none of these small or precision-critical ones (norms, MoE routers, position and
// token-type embeddings, Mamba/RWKV/T5/Gemma-3n extras). Everything else is copied as it is.
bool is_quantizable(const GGUFTensorInfo& t) {
    static const char* const kKeep[] = {
        "_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
        "ssm_conv1d.weight", "shortconv.conv.weight", "time_mix_", "attn_rel_b.weight",
    };
    if (!ends_with(t.name, "weight") || effective_dims(t) < 2) return false;
    if (t.name == "position_embd.weight" || t.name == "token_types.weight") return false;
    for (const char* k : kKeep)
        if (contains(t.name, k)) return false;
    return true;
}

// llama.cpp's layer choice for the _M mixes: the first and last eighth of the layers, and every
// third one in between.
bool use_more_bits(int i_layer, int n_layers) {
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// The model facts the rules read.
struct ModelFacts {
    std::string arch;
    int n_layer = 0;         // {arch}.block_count, else one past the largest blk.N
    int n_expert = 0;        // {arch}.expert_count
    int n_attention_wv = 0;  // tensors named *attn_v.weight, *attn_qkv.weight or *attn_kv_b.weight
    bool has_output = false; // output.weight exists (else the embedding is tied and takes its rule)
};

// Counters that advance as the tensors are visited in llama.cpp's order (by layer, then by name).
struct Counters {
    int i_attention_wv = 0;
    int i_ffn_down = 0;
};

// The type rules this file implements, from llama.cpp's llama_tensor_get_type (src/llama-quant.cpp),
// restricted to the types minfer can compute with:
//  - output.weight (token_embd.weight when the embedding is tied): q8_0 when its rows do not divide
//    into the base type's blocks (or the architecture is falcon), else q6_k unless the base is q8_0.
//  - attn_v.weight: _M mixes give q6_k to the use_more_bits layers; q4_k_s gives q5_k to the first
//    four; models with 8 experts get q8_0 (also attn_k.weight).
//  - ffn_down: _M mixes give q6_k to the use_more_bits layers (falcon q4_k_m: q6_k for the first
//    sixteenth, q5_k on use_more_bits layers); q4_k_s gives q5_k to the first eighth (not falcon).
//  - attn_output.weight: q5_k for q4_k_s/q4_k_m with 8 experts. attn_qkv.weight (fused): q4_k_m
//    q5_k, q5_k_m q6_k.
//  - Fallbacks, where a row is not a multiple of the type's block: q4_k -> q5_0, q5_k -> q5_1,
//    q6_k -> q8_0, and f16 when even that does not divide; q4_0..q8_0 have none (an error).
//  Not implemented: the 70B-specific attn_v bump (it needs llama.cpp's model-size table), imatrix
//  rules, and the rules of the types minfer does not compute (q2_k, q3_k, iq*).
DType planned_type(const QuantScheme& s, const ModelFacts& m, const GGUFTensorInfo& t, Counters& c) {
    const std::string& name = t.name;
    const int64_t nx = t.ne[0];
    const bool k_m = s.mix == QuantMix::K_M, q4_k_s = s.mix == QuantMix::K_S && s.base == DType::Q4_K;
    DType type = s.base;
    if (name == "output.weight" || (!m.has_output && name == "token_embd.weight")) {
        if (m.arch == "falcon" || nx % dtype_traits(s.base).block_size != 0) type = DType::Q8_0;
        else if (s.base != DType::Q8_0) type = DType::Q6_K;
    } else if (contains(name, "attn_v.weight")) {
        if (k_m && use_more_bits(c.i_attention_wv, m.n_attention_wv)) type = DType::Q6_K;
        else if (q4_k_s && c.i_attention_wv < 4) type = DType::Q5_K;
        if (m.n_expert == 8) type = DType::Q8_0;
        ++c.i_attention_wv;
    } else if (contains(name, "attn_k.weight")) {
        if (m.n_expert == 8) type = DType::Q8_0;
    } else if (contains(name, "ffn_down")) {
        // With experts, layers are read from the name (expert tensors are not one per layer).
        const int il = m.n_expert > 1 ? layer_of(name) : c.i_ffn_down;
        if (m.n_expert > 1 && (il < 0 || il >= m.n_layer))
            throw Error(strfmt("tensor '%s': cannot tell its layer (expected blk.N with N < %d)", name.c_str(),
                               m.n_layer));
        if (k_m && s.base == DType::Q4_K && m.arch == "falcon") {
            type = il < m.n_layer / 16 ? DType::Q6_K : use_more_bits(il, m.n_layer) ? DType::Q5_K : DType::Q4_K;
        } else if (k_m && use_more_bits(il, m.n_layer)) {
            type = DType::Q6_K;
        } else if (q4_k_s && m.arch != "falcon" && il < m.n_layer / 8) {
            type = DType::Q5_K;
        }
        ++c.i_ffn_down;
    } else if (contains(name, "attn_output.weight")) {
        if (m.arch != "falcon" && m.n_expert == 8 && s.base == DType::Q4_K && s.mix != QuantMix::UNIFORM)
            type = DType::Q5_K;
    } else if (contains(name, "attn_qkv.weight")) {
        if (k_m) type = s.base == DType::Q4_K ? DType::Q5_K : DType::Q6_K;
    }
    return type;
}

// The type to use when rows of nx elements do not divide into type's blocks.
DType fallback_type(const std::string& name, int64_t nx, DType type) {
    DType fb;
    switch (type) {
        case DType::Q4_K: fb = DType::Q5_0; break;
        case DType::Q5_K: fb = DType::Q5_1; break;
        case DType::Q6_K: fb = DType::Q8_0; break;
        default:
            throw Error(strfmt("tensor '%s': rows of %lld elements do not divide into %s blocks of %lld, and %s has "
                               "no fallback type", name.c_str(), (long long)nx, dtype_name(type),
                               (long long)dtype_traits(type).block_size, dtype_name(type)));
    }
    return nx % dtype_traits(fb).block_size == 0 ? fb : DType::F16;
}

ModelFacts model_facts(const GGUFFile& in) {
    ModelFacts m;
    m.arch = in.get_str("general.architecture", "");
    int max_layer = -1;
    for (size_t i = 0; i < in.n_tensors(); ++i) {
        const std::string& name = in.tensor(i).name;
        max_layer = std::max(max_layer, layer_of(name));
        if (contains(name, "attn_v.weight") || contains(name, "attn_qkv.weight") || contains(name, "attn_kv_b.weight"))
            ++m.n_attention_wv;
        if (name == "output.weight") m.has_output = true;
    }
    m.n_layer = max_layer + 1;
    if (!m.arch.empty()) {
        m.n_layer = int(in.get_u32(m.arch + ".block_count", uint32_t(m.n_layer)));
        m.n_expert = int(in.get_u32(m.arch + ".expert_count", 0));
    }
    return m;
}

// The reference quantizer writing type `to` (core/quants.h), or null when minfer has none.
FromFloatFn reference_quantizer(DType to) {
    switch (to) {
        case DType::F32: return f32_from_float;
        case DType::F16: return f16_from_float;
        case DType::BF16: return bf16_from_float;
        case DType::Q4_0: return quantize_row_q4_0_ref;
        case DType::Q4_1: return quantize_row_q4_1_ref;
        case DType::Q5_0: return quantize_row_q5_0_ref;
        case DType::Q5_1: return quantize_row_q5_1_ref;
        case DType::Q8_0: return quantize_row_q8_0_ref;
        case DType::Q4_K: return quantize_row_q4_K_ref;
        case DType::Q5_K: return quantize_row_q5_K_ref;
        case DType::Q6_K: return quantize_row_q6_K_ref;
        default: return nullptr;
    }
}

void convert_rows_on(ThreadPool& pool, const std::string& what, DType from, const void* src, DType to, void* dst,
                     int64_t n_rows, int64_t ne0) {
    const ToFloatFn to_float = dtype_traits(from).to_float;
    if (!to_float)
        throw Error(strfmt("%s: cannot read type %s (minfer has no converter for it)", what.c_str(), dtype_name(from)));
    const FromFloatFn quantize = reference_quantizer(to);
    MF_ASSERT_MSG(quantize != nullptr, "convert_rows: no reference quantizer for the planned type");
    const size_t src_row = dtype_row_size(from, ne0), dst_row = dtype_row_size(to, ne0);
    std::vector<std::vector<float>> scratch(size_t(pool.n_threads()), std::vector<float>(size_t(ne0)));
    std::atomic<int64_t> bad_row{n_rows};  // the first row holding a NaN or an infinity
    const int64_t rows_per_chunk = std::max<int64_t>(1, 16384 / ne0);
    pool.parallel_for(
        n_rows,
        [&](int64_t begin, int64_t end, int thread) {
            float* row = scratch[size_t(thread)].data();
            for (int64_t r = begin; r < end; ++r) {
                to_float(static_cast<const uint8_t*>(src) + size_t(r) * src_row, row, ne0);
                bool finite = true;
                for (int64_t j = 0; j < ne0; ++j) finite &= std::isfinite(row[j]);
                if (!finite) {
                    int64_t seen = bad_row.load();
                    while (r < seen && !bad_row.compare_exchange_weak(seen, r)) {}
                    continue;
                }
                quantize(row, static_cast<uint8_t*>(dst) + size_t(r) * dst_row, ne0);
            }
        },
        rows_per_chunk);
    if (bad_row.load() < n_rows)
        throw Error(strfmt("%s: row %lld holds a NaN or an infinity", what.c_str(), (long long)bad_row.load()));
}

int resolve_threads(int n) { return n > 0 ? n : int(std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace

std::vector<std::string> quant_scheme_names() {
    std::vector<std::string> names;
    for (const auto& s : schemes()) names.push_back(s.name);
    return names;
}

QuantScheme quant_scheme_from_name(const std::string& name) {
    std::string lower = name;
    for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    std::string list;
    for (const auto& s : schemes()) {
        if (s.name == lower) return s;
        list += (list.empty() ? "" : ", ") + s.name;
    }
    throw Error(strfmt("unknown type '%s' (types: %s)", gguf_escape(name, 40).c_str(), list.c_str()));
}

std::vector<TensorPlan> plan_quantization(const GGUFFile& in, const QuantScheme& scheme) {
    const ModelFacts facts = model_facts(in);
    std::vector<TensorPlan> plans(in.n_tensors());
    std::vector<size_t> order(in.n_tensors());
    for (size_t i = 0; i < order.size(); ++i) {
        order[i] = i;
        plans[i].name = in.tensor(i).name;
        plans[i].from = plans[i].to = in.tensor(i).type;
    }
    // The _M counters advance in llama.cpp's tensor order: by layer (non-layer tensors first), then name.
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        const std::string &na = in.tensor(a).name, &nb = in.tensor(b).name;
        const int la = layer_of(na), lb = layer_of(nb);
        return la != lb ? la < lb : na < nb;
    });
    Counters counters;
    for (size_t i : order) {
        const GGUFTensorInfo& t = in.tensor(i);
        if (!is_quantizable(t)) continue;
        DType type = planned_type(scheme, facts, t, counters);
        if (t.ne[0] % dtype_traits(type).block_size != 0) {
            type = fallback_type(t.name, t.ne[0], type);
            plans[i].fallback = true;
        }
        plans[i].to = type;
    }
    return plans;
}

void convert_rows(const std::string& what, DType from, const void* src, DType to, void* dst, int64_t n_rows,
                  int64_t ne0, int n_threads) {
    ThreadPool pool(std::max(1, n_threads));
    convert_rows_on(pool, what, from, src, to, dst, n_rows, ne0);
}

QuantizeSummary quantize_model(const QuantizeOptions& opts) {
    const QuantScheme scheme = quant_scheme_from_name(opts.type);
    if (opts.out_path.empty()) throw Error("no output path");
    const GGUFFile in = GGUFFile::open(opts.in_path);
    const std::vector<TensorPlan> plans = plan_quantization(in, scheme);

    GGUFWriter w;
    for (size_t i = 0; i < in.n_kv(); ++i) {
        const GGUFValue& v = in.kv(i);
        if (v.key().compare(0, 6, "split.") == 0) continue;  // the output is one file
        w.set(std::string(v.key()), GGUFMetaValue::copy_of(v));
    }
    w.set_u32("general.quantization_version", kQuantizationVersion);
    w.set_u32("general.file_type", scheme.llama_ftype);

    QuantizeSummary summary;
    ThreadPool pool(resolve_threads(opts.n_threads));
    bool warned = false;
    for (size_t i = 0; i < in.n_tensors(); ++i) {
        const GGUFTensorInfo& t = in.tensor(i);
        const TensorPlan& plan = plans[i];
        const int n_dims = std::max(1, t.n_dims);
        summary.n_elements += uint64_t(t.n_elements);
        summary.in_bytes += t.n_bytes;
        summary.out_bytes += GGUFWriter::tensor_bytes(t.name, plan.to, n_dims, t.ne);
        ++summary.out_type_counts[dtype_name(plan.to)];
        auto fill = [&opts, &in, &plans, &pool, &warned, i](void* dst, uint64_t n_bytes) {
            const GGUFTensorInfo& src = in.tensor(i);
            const TensorPlan& p = plans[i];
            if (opts.on_tensor) opts.on_tensor(i + 1, plans.size(), p);
            if (!p.requantize()) {
                std::memcpy(dst, src.data, n_bytes);
                return;
            }
            if (dtype_traits(p.from).is_quantized && !warned && opts.on_notice) {
                opts.on_notice(strfmt("tensor '%s' is already %s: requantizing to %s adds the errors of both "
                                      "(quantize the f32/f16 original where you can)", src.name.c_str(),
                                      dtype_name(p.from), dtype_name(p.to)));
                warned = true;
            }
            convert_rows_on(pool, in.name() + ": tensor '" + src.name + "'", p.from, src.data, p.to, dst,
                            src.n_elements / src.ne[0], src.ne[0]);
        };
        w.add_tensor(t.name, plan.to, n_dims, t.ne, fill);
    }

    w.write(opts.out_path);  // beside it first, then renamed: no partial file under its name
    struct stat st;
    if (stat(opts.out_path.c_str(), &st) == 0) summary.out_file_bytes = uint64_t(st.st_size);
    return summary;
}

}  // namespace mf
