// Internal to the tokenizer files: the per-algorithm entry points that tokenizer.cpp dispatches to
// after special tokens have been split out of the text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/vocab.h"

namespace mf {

// SPM: text already has its spaces escaped as U+2581 (and the space prefix added); appends ids.
void tokenize_spm(const Vocab& vocab, const std::string& text, std::vector<int32_t>& out);

// Byte-level BPE: raw text of one fragment; pre-tokenizes, byte-encodes and merges; appends ids.
void tokenize_bpe(const Vocab& vocab, const std::string& text, std::vector<int32_t>& out);

}  // namespace mf
