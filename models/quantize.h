// Model quantization: which type each tensor of a GGUF file becomes (llama.cpp's mix rules), and a
// writer that requantizes row by row on several threads, one output tensor in memory at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/gguf.h"

namespace mf {

// How a TYPE argument mixes types: every quantized matrix in one type, or llama.cpp's _S / _M mixes
// that give attn_v and ffn_down more bits on some layers.
enum class QuantMix { UNIFORM, K_S, K_M };

struct QuantScheme {
    std::string name;         // "q4_k_m"
    DType base = DType::F32;  // the type most matrices get
    QuantMix mix = QuantMix::UNIFORM;
    uint32_t llama_ftype = 0; // general.file_type written (llama.cpp's LLAMA_FTYPE_MOSTLY_*)
};

// The TYPE names quantize accepts, in help order: "q8_0", "q4_0", ..., "q5_k_m".
std::vector<std::string> quant_scheme_names();
// The scheme called name (case-insensitive); throws Error listing the names when unknown.
QuantScheme quant_scheme_from_name(const std::string& name);

// What happens to one tensor.
struct TensorPlan {
    std::string name;
    DType from = DType::F32;  // the input's type
    DType to = DType::F32;    // the output's type; equal to from: the bytes are copied
    bool fallback = false;    // to replaced the planned type because the rows do not divide into its blocks
    bool requantize() const { return from != to; }
};

// The output type of every tensor of in (file order) under scheme. Throws Error naming the tensor
// when a row length fits no type (not a multiple of 32 for q4_0..q8_0, as in llama.cpp).
std::vector<TensorPlan> plan_quantization(const GGUFFile& in, const QuantScheme& scheme);

// Converts n_rows rows of ne0 elements from type `from` (src, rows back to back) to type `to` (dst):
// each row to f32 (core/quants.h), then the reference quantizer of `to`. Rows are split over
// n_threads (>= 1); the bytes do not depend on it. Throws Error naming what on a non-finite value
// or a type without a converter.
void convert_rows(const std::string& what, DType from, const void* src, DType to, void* dst, int64_t n_rows,
                  int64_t ne0, int n_threads);

struct QuantizeOptions {
    std::string in_path;   // a GGUF file of f32/f16/bf16 or quantized tensors
    std::string out_path;  // written as out_path + ".tmp", renamed when complete
    std::string type;      // a name from quant_scheme_names()
    int n_threads = 0;     // <= 0: every hardware thread
    // Called before each tensor is produced: index (1-based), count, and its plan.
    std::function<void(size_t i, size_t n, const TensorPlan& plan)> on_tensor;
    // Called once when a tensor that is already quantized is quantized again.
    std::function<void(const std::string& notice)> on_notice;
};

struct QuantizeSummary {
    uint64_t n_elements = 0;       // over all tensors
    uint64_t in_bytes = 0;         // tensor data of the input
    uint64_t out_bytes = 0;        // tensor data of the output
    uint64_t out_file_bytes = 0;   // size of the written file
    std::map<std::string, size_t> out_type_counts;  // output tensors per type name
};

// Writes opts.out_path: the input's metadata (general.file_type and general.quantization_version = 2
// set, split keys dropped) and its tensors in the planned types. Throws Error on a bad type, a
// missing or malformed input, or an I/O failure; then neither out_path nor its .tmp is left behind
// (an existing out_path is untouched).
QuantizeSummary quantize_model(const QuantizeOptions& opts);

}  // namespace mf
