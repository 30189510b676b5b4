// A tokenizer vocabulary read from GGUF metadata (tokenizer.ggml.*): token texts, scores, types,
// BPE merges, the special ids and flags, and the end-of-generation set. tokenizer.h uses it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace mf {

class GGUFFile;
class Pretokenizer;

constexpr int32_t TOKEN_NONE = -1;  // "no such token" for the optional special ids

enum class VocabType {
    SPM,  // tokenizer.ggml.model "llama": SentencePiece BPE over characters, byte fallback
    BPE,  // tokenizer.ggml.model "gpt2": byte-level BPE with a regex pre-tokenizer
};

// tokenizer.ggml.token_type values as stored in files (llama.cpp's llama_token_type); never renumber.
enum class TokenType : int32_t {
    UNDEFINED = 0, NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6,
};

// Per-token attribute bits: the type as a bit, plus the adjustments llama.cpp makes by name
// (EOG-looking tokens become CONTROL; Phi-3's special tokens eat the whitespace after them).
enum TokenAttr : uint32_t {
    ATTR_UNDEFINED = 0,
    ATTR_UNKNOWN = 1u << 0,
    ATTR_UNUSED = 1u << 1,
    ATTR_NORMAL = 1u << 2,
    ATTR_CONTROL = 1u << 3,
    ATTR_USER_DEFINED = 1u << 4,
    ATTR_BYTE = 1u << 5,
    ATTR_LSTRIP = 1u << 6,  // when parsed as special: strip whitespace before it
    ATTR_RSTRIP = 1u << 7,  // when parsed as special: strip whitespace after it
};

struct Vocab {
    VocabType type = VocabType::SPM;
    std::string model;  // tokenizer.ggml.model: "llama" or "gpt2"
    std::string pre;    // tokenizer.ggml.pre ("default" when absent)

    std::vector<std::string> tokens;     // [n_vocab] token texts as stored
    std::vector<float> scores;           // [n_vocab] SPM merge priority, higher merges first; 0 when absent
    std::vector<TokenType> token_types;  // [n_vocab] as stored; NORMAL when absent
    std::vector<uint32_t> attrs;         // [n_vocab] TokenAttr bits used by the tokenizer
    std::vector<std::string> merges;     // [n_merges] BPE merges "left right"; the index is the rank

    int32_t bos_id = TOKEN_NONE;
    int32_t eos_id = TOKEN_NONE;
    int32_t eot_id = TOKEN_NONE;  // end of turn; found by text when the file does not say
    int32_t eom_id = TOKEN_NONE;  // end of message (<|eom_id|>)
    int32_t unk_id = TOKEN_NONE;
    int32_t pad_id = TOKEN_NONE;
    int32_t sep_id = TOKEN_NONE;

    bool add_bos = false;           // tokenize(add_special) prepends bos_id
    bool add_eos = false;           // tokenize(add_special) appends eos_id
    bool add_space_prefix = false;  // SPM: a space before the text and after each special token
    bool ignore_merges = false;     // BPE: a pre-token that is itself a token is taken whole
    bool clean_spaces = false;      // detokenize: HF's clean_up_tokenization_spaces

    std::vector<int32_t> eog_ids;      // sorted: eos, eot, eom and the end-of-turn-looking tokens
    std::vector<int32_t> special_ids;  // CONTROL/USER_DEFINED/UNKNOWN tokens, longest text first

    std::unordered_map<std::string, int32_t> token_to_id;
    std::unordered_map<std::string, int32_t> merge_ranks;  // "left right" -> rank
    std::shared_ptr<const Pretokenizer> pretokenizer;      // BPE only

    int32_t n_vocab() const { return int32_t(tokens.size()); }
    // The id whose text is exactly text, or TOKEN_NONE.
    int32_t find(const std::string& text) const;
    // The rank of merging left and right, or -1 when they do not merge.
    int32_t merge_rank(const std::string& left, const std::string& right) const;
    bool is_eog(int32_t id) const;
    bool has_attr(int32_t id, uint32_t attr) const { return (attrs[size_t(id)] & attr) != 0; }
};

// The vocabulary of a GGUF file (a full model or a vocab-only file). Throws mf::Error naming the
// file for a missing or malformed tokenizer.ggml.* key, unequal array lengths, out-of-range ids,
// duplicate tokens, and tokenizer models or pre-tokenizers minfer does not implement.
Vocab load_vocab(const GGUFFile& file);

}  // namespace mf
