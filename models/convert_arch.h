// Internal to `minfer convert`: the per-architecture plan (llama.cpp's metadata keys, tensor names and
// layouts for an HF checkpoint) that models/convert.cpp writes, and the pipeline without the tokenizer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/gguf.h"
#include "core/safetensors.h"
#include "models/convert.h"

namespace mf {

// One output tensor: its GGUF name and shape, and how its f32 rows are produced from the checkpoint.
struct ConvertTensor {
    std::string name;          // llama.cpp's name, e.g. "blk.0.attn_q.weight"
    int n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // ggml order: ne[0] elements per row
    bool keep_f32 = false;     // norms, biases, routers, rope factors: f32 whatever --type says
    bool is_expert = false;    // stacked experts (ne[2] of them), for the size label
    // Writes row r (0 <= r < ne[1] * ne[2] * ne[3]) as ne[0] floats into dst; thread-safe.
    std::function<void(int64_t r, float* dst)> row;

    int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
};

// What an HF checkpoint becomes: general.architecture, the architecture's metadata keys (not the
// general.*, tokenizer.* or minfer.* ones), and the tensors in file order.
struct ConvertPlan {
    std::string hf_arch;  // config.json's architectures[0], e.g. "LlamaForCausalLM"
    std::string arch;     // general.architecture: "llama", "qwen2", "gemma3", "deepseek2"
    std::vector<std::pair<std::string, GGUFMetaValue>> kv;
    std::vector<ConvertTensor> tensors;
    std::shared_ptr<SafetensorsCheckpoint> checkpoint;  // keeps the mapped files the rows read
};

// The HF architectures convert knows and the GGUF architecture each becomes, for messages:
// "LlamaForCausalLM (llama), MistralForCausalLM (llama), ...".
std::string convert_supported_architectures();

// Reads hf_dir/config.json, opens the safetensors files and maps every tensor. Throws Error (one
// line) on a missing or unreadable config.json, an unknown architecture (listing the supported
// ones), a missing or corrupt safetensors file, a missing tensor, a tensor whose shape differs from
// what config.json implies, a tensor of a dtype other than F32/F16/BF16, or a tensor it cannot map.
ConvertPlan plan_hf_conversion(const std::string& hf_dir);

// Sets the tokenizer.* keys on the writer (convert_hf_tokenizer, or a test's stand-in).
using TokenizerFn = std::function<void(GGUFWriter& w)>;

// convert_hf_checkpoint with the tokenizer keys coming from tokenizer: plans, writes
// opts.out_path + ".tmp" and renames it to opts.out_path; on any error neither file is left.
void convert_hf_checkpoint_with(const ConvertOptions& opts, const TokenizerFn& tokenizer);

}  // namespace mf
