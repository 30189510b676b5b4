// Text <-> token ids for a Vocab: SentencePiece-style BPE ("llama") and byte-level BPE ("gpt2"),
// special-token parsing, pieces, whole-text detokenization and a streaming UTF-8-safe detokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/vocab.h"

namespace mf {

// text -> ids, as llama.cpp's llama_tokenize. add_special: BOS/EOS as the vocabulary's add_bos /
// add_eos ask. parse_special: control tokens written in the text become their single ids (longest
// first); user-defined tokens are always matched whole. Empty text -> [] (or [BOS]).
std::vector<int32_t> tokenize(const Vocab& vocab, const std::string& text, bool add_special, bool parse_special);

// The bytes one token stands for: U+2581 becomes a space (SPM), byte-level characters become their
// bytes (BPE), <0xXX> byte tokens become that byte (possibly part of a UTF-8 character). Control and
// unknown tokens give "" unless special. Throws mf::Error for an id outside [0, n_vocab).
std::string token_to_piece(const Vocab& vocab, int32_t id, bool special);

// ids -> text, as llama.cpp's llama_detokenize (remove_special = false): the pieces joined, the
// first token's space prefix dropped when the vocabulary adds one, clean_up_tokenization_spaces
// applied when the vocabulary asks for it.
std::string detokenize(const Vocab& vocab, const std::vector<int32_t>& ids, bool special = false);

// Hugging Face's clean_up_tokenization_spaces as llama.cpp does it: " ?", " !", " .", " ," lose the
// space; " ' " becomes "'"; " 's", " 'm", " 're", " 've" lose the space.
std::string clean_up_tokenization_spaces(const std::string& text);

// Streams generated tokens as text that never ends inside a UTF-8 character: push() returns the
// complete characters so far and holds back a trailing partial sequence until later bytes finish it.
class Detokenizer {
public:
    // vocab must outlive the detokenizer; special: render control tokens as their text.
    explicit Detokenizer(const Vocab& vocab, bool special = false) : vocab_(&vocab), special_(special) {}

    // Appends id's piece; returns the text that is now complete (possibly "").
    std::string push(int32_t id);
    // Returns whatever is held back (an unfinished sequence at the end of generation) and resets.
    std::string flush();
    // Bytes held back by the last push().
    size_t pending() const { return pending_.size(); }

private:
    const Vocab* vocab_;
    bool special_;
    std::string pending_;
};

}  // namespace mf
