// Hugging Face checkpoint -> GGUF conversion (minfer convert): config.json + safetensors + tokenizer
// files in, a GGUF with llama.cpp's architecture, key and tensor names out.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/dtype.h"
#include "core/gguf.h"

namespace mf {

struct ConvertOptions {
    std::string hf_dir;            // the checkpoint directory (config.json, *.safetensors, tokenizer)
    std::string out_path;          // written to out_path + ".tmp", renamed at the end
    DType type = DType::F16;       // 2-D weights: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K; norms stay F32
    std::string pre;               // tokenizer.ggml.pre override; "" = detect (refuse when unsure)
    std::string kv_type;           // "" or minfer.kv.type_k/type_v to record (f16, q8_0, q4_0 ...)
    int64_t kv_window = -1;        // >= 0: record minfer.kv.window
    int64_t kv_sinks = -1;         // >= 0: record minfer.kv.sinks
    // Called after each tensor: i of n done, bytes written so far.
    std::function<void(size_t i, size_t n, uint64_t bytes)> progress;
};

// Converts opts.hf_dir to opts.out_path. Throws Error (one line naming the file, key or tensor) on an
// unsupported architecture or dtype, a missing or corrupt file, or a tensor of the wrong shape; no
// output file is left behind then.
void convert_hf_checkpoint(const ConvertOptions& opts);

// Reads the tokenizer of an HF checkpoint directory (tokenizer.json for BPE, tokenizer.model for
// SentencePiece, tokenizer_config.json, generation_config.json) and sets the tokenizer.ggml.* keys
// (model, pre, tokens, scores, token_type, merges, bos/eos/eot/unk/pad ids, add_bos/add_eos,
// chat_template) on w. pre_override names tokenizer.ggml.pre; "" = detect from the pre-tokenizer,
// throwing Error when it cannot be recognised (a wrong guess silently breaks tokenization).
void convert_hf_tokenizer(const std::string& hf_dir, const std::string& pre_override, GGUFWriter& w);

}  // namespace mf
