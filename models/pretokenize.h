// Byte-level BPE pre-tokenizers: the regex cascades that split text into words before merging,
// selected by tokenizer.ggml.pre. The regexes (PCRE2, UTF + UCP) are the ones llama.cpp uses.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace mf {

class Pretokenizer {
public:
    // Compiles the rules for a tokenizer.ggml.pre value ("" means "default"). Throws mf::Error
    // listing the supported names when pre is unknown.
    explicit Pretokenizer(const std::string& pre);
    // A cascade of the given regexes (no defaults attached): a converter emulating a tokenizer.json
    // pre-tokenizer. Throws mf::Error naming a pattern PCRE2 cannot compile.
    static std::unique_ptr<Pretokenizer> from_regexes(const std::vector<std::string>& regexes);
    ~Pretokenizer();
    Pretokenizer(const Pretokenizer&) = delete;
    Pretokenizer& operator=(const Pretokenizer&) = delete;

    // text (any bytes; invalid UTF-8 becomes U+FFFD first) -> words. Each regex in turn splits every
    // piece left by the previous one into its matches and the unmatched gaps between them.
    std::vector<std::string> split(const std::string& text) const;

    // The defaults llama.cpp attaches to this pre-tokenizer.
    bool ignore_merges() const { return ignore_merges_; }  // a word that is a token is taken whole
    bool add_bos() const { return add_bos_; }              // before tokenizer.ggml.add_bos_token
    bool clean_spaces() const { return clean_spaces_; }    // detokenize cleans " ," etc.

    // "default, gpt-2, gpt2, ...": the names the constructor accepts.
    static std::string supported_names();

private:
    Pretokenizer() = default;
    // Compiles pattern and appends it; false (and a message in err) when PCRE2 rejects it.
    bool add_regex(const char* pattern, std::string& err);
    struct Regex;
    std::vector<std::unique_ptr<Regex>> regexes_;
    bool ignore_merges_ = false;
    bool add_bos_ = false;
    bool clean_spaces_ = true;
};

}  // namespace mf
