// Recognising the pre-tokenizer of a byte-level BPE tokenizer.json as one of the tokenizer.ggml.pre
// names minfer implements, by how it splits text rather than by a table of known file hashes.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

namespace mf {

// The tokenizer.ggml.pre name whose word splitting equals that of tok's normalizer + pre_tokenizer on
// a set of probe texts, and whose ignore_merges equals tok's model.ignore_merges; clean_spaces
// (tokenizer_config.json's clean_up_tokenization_spaces) picks among equal splitters. Throws Error
// naming file, saying what was not recognised and asking for --pre NAME, when none matches.
std::string detect_bpe_pre(const nlohmann::json& tok, bool clean_spaces, const std::string& file);

// Throws Error (listing the valid names) unless name is a tokenizer.ggml.pre minfer implements.
void check_pre_name(const std::string& name);

}  // namespace mf
