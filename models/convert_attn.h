// Attention conversion of a GGUF model (minfer convert --attn): llama/qwen2 K/V heads mean-pooled into
// fewer (GQA, MQA), or llama attention factorized into deepseek2's MLA by a truncated SVD, training-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace mf {

struct AttnSpec {
    enum class Kind { GQA, MLA };
    Kind kind = Kind::GQA;
    uint32_t group = 0;     // GQA: query heads per KV head, n_head_kv = n_head / group; 0 = MQA (one KV head)
    uint32_t rank = 0;      // MLA: kv_lora_rank R, the latent width (1..n_embd)
    uint32_t rope_dim = 0;  // MLA: d_r, rotary dims kept as the shared k_pe (even); 0 = n_rot / 2
};

// "gqa:K" (n_head_kv = n_head / K), "mqa", "mla:R" or "mla:R:D" (D = rope dims kept). Throws Error
// (one line quoting spec) when malformed; the model-dependent checks happen in convert_attention.
AttnSpec parse_attn_spec(const std::string& spec);

// How the MLA latent passes deepseek2's attn_kv_a_norm (an RMSNorm) unchanged in meaning:
// LINEAR scales the latent far below the norm's eps so the norm acts as a fixed linear scale (exact
// for any rank); RMS keeps the latent at unit RMS and w = 1 (exact only when rank = n_embd).
enum class MlaNorm { LINEAR, RMS };

struct AttnConvertOptions {
    std::string in_path;      // a llama or qwen2 GGUF (any weight types minfer reads)
    std::string out_path;     // written to out_path + ".tmp", renamed when complete
    AttnSpec spec;
    DType type = DType::F16;  // type of the recomputed matrices; copied tensors keep their bytes
    MlaNorm mla_norm = MlaNorm::LINEAR;
    int n_threads = 0;        // <= 0: every hardware thread
};

struct AttnConvertSummary {
    std::string arch_in, arch_out;    // "llama" -> "llama" (GQA) or "deepseek2" (MLA)
    uint32_t n_head = 0, n_head_kv_in = 0, n_head_kv_out = 0;  // n_head_kv_out 1 for MLA (one latent row)
    uint64_t kv_values_in = 0, kv_values_out = 0;  // cached values per token and layer (K + V; MLA: R + d_r)
    // MLA: over the layers, mean ||A - A_R||_F / ||A||_F of the stacked [K_nope; V] (after the attn_norm
    // gain is folded in), and of the per-KV-head rope rows of K vs their mean (the shared k_pe).
    double svd_rel_error = 0.0, k_pe_rel_error = 0.0;
};

// Writes opts.out_path. Throws Error (one line naming the file, key, tensor or spec) on an unsupported
// architecture, a spec the model cannot take (gqa:K with K not dividing n_head or asking for more KV
// heads than it has, mla:R with R > n_embd, mla on qwen2 whose Q/K/V biases deepseek2 cannot carry), or
// an I/O failure; then neither out_path nor its .tmp is left behind.
AttnConvertSummary convert_attention(const AttnConvertOptions& opts);

// The top-k right singular subspace of a (m x n, row-major, double): k orthonormal rows vt [k x n] and
// their singular values s [k], descending. Where k exceeds the rank, the rows past it complete an
// orthonormal set (s = 0), so a (vt^T vt) is a's best rank-k approximation for every k <= n.
struct TopSubspace {
    std::vector<double> vt;  // [k x n], row-major, orthonormal rows
    std::vector<double> s;   // [k], descending
};
TopSubspace top_right_singular(const std::vector<double>& a, int64_t m, int64_t n, int64_t k);

}  // namespace mf
