// convert_hf_checkpoint: the convert pipeline (convert.cpp) with the tokenizer of convert_tokenizer.cpp.
// Kept apart so the pipeline and its tests link without the tokenizer converter.
#include "models/convert_arch.h"

namespace mf {

void convert_hf_checkpoint(const ConvertOptions& opts) {
    convert_hf_checkpoint_with(opts, [&opts](GGUFWriter& w) { convert_hf_tokenizer(opts.hf_dir, opts.pre, w); });
}

}  // namespace mf
