// UTF-8 helpers for the tokenizers: sequence lengths, repair of invalid input, completeness checks
// for streaming, and GPT-2's byte <-> printable-character map used by byte-level BPE vocabularies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mf {

// Length of the UTF-8 sequence that lead byte c starts (1 for ASCII, stray continuation bytes
// and invalid lead bytes too), as llama.cpp's unicode_len_utf8.
size_t utf8_seq_len(char c);

// Appends code point cp (<= 0x10FFFF) to out as UTF-8.
void utf8_append(std::string& out, uint32_t cp);

// text with every byte that does not start a well-formed UTF-8 sequence replaced by U+FFFD.
std::string utf8_sanitize(const std::string& text);

// True when text is entirely well-formed UTF-8.
bool utf8_is_valid(const std::string& text);

// Length of the longest prefix of text that does not end inside a UTF-8 sequence that later
// bytes could still complete: a trailing lead byte followed by fewer continuation bytes than it
// announces is held back; everything else (complete or hopelessly invalid) is released.
size_t utf8_complete_prefix(const std::string& text);

// GPT-2 byte-level BPE: the printable character (as UTF-8) that stands for byte b in the vocab.
const std::string& bpe_byte_to_char(uint8_t b);

// The inverse: the byte that the single character at text[pos..] stands for, and its length in
// *len; -1 when that character is not one of the 256 byte characters.
int bpe_char_to_byte(const std::string& text, size_t pos, size_t* len);

}  // namespace mf
