// The tokenizer's public entry points (see tokenizer.h): special-token partitioning, dispatch to the
// SPM and BPE algorithms, pieces, detokenization with llama.cpp's space cleanup, and streaming.
#include "models/tokenizer.h"

#include <cctype>
#include <string_view>

#include "core/common.h"
#include "models/tokenizer_impl.h"
#include "models/utf8.h"

namespace mf {

namespace {

// A stretch of the input: a token already decided, or raw text still to tokenize.
struct Fragment {
    int32_t token;  // TOKEN_NONE for raw text
    size_t offset;  // raw text: [offset, offset + length) of the input
    size_t length;
};

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Splits the special tokens out of text, longest token first, as llama.cpp's
// tokenizer_st_partition. Control and unknown tokens are only matched when parse_special.
std::vector<Fragment> partition_special(const Vocab& vocab, const std::string& text, bool parse_special) {
    std::vector<Fragment> frags;
    if (text.empty()) return frags;
    frags.push_back({TOKEN_NONE, 0, text.size()});

    std::vector<Fragment> next;
    for (int32_t id : vocab.special_ids) {
        if (!parse_special && vocab.has_attr(id, ATTR_CONTROL | ATTR_UNKNOWN)) continue;
        const std::string& tok = vocab.tokens[size_t(id)];
        const bool lstrip = vocab.has_attr(id, ATTR_LSTRIP);
        const bool rstrip = vocab.has_attr(id, ATTR_RSTRIP);
        bool found = false;
        next.clear();
        for (const Fragment& f : frags) {
            if (f.token != TOKEN_NONE) {
                next.push_back(f);
                continue;
            }
            const size_t end = f.offset + f.length;
            const std::string_view window(text.data(), end);
            size_t pos = f.offset;
            for (size_t m; (m = window.find(tok, pos)) != std::string_view::npos;) {
                found = true;
                size_t left_end = m;
                if (lstrip) {
                    while (left_end > pos && is_space(text[left_end - 1])) --left_end;
                }
                if (left_end > pos) next.push_back({TOKEN_NONE, pos, left_end - pos});
                next.push_back({id, 0, 0});
                pos = m + tok.size();
                if (rstrip) {
                    while (pos < end && is_space(text[pos])) ++pos;
                }
            }
            if (pos < end) next.push_back({TOKEN_NONE, pos, end - pos});
        }
        if (found) frags.swap(next);
    }
    return frags;
}

std::string escape_spaces(const std::string& text) {
    std::string out;
    out.reserve(text.size() + text.size() / 4);
    for (char c : text) {
        if (c == ' ') out += "\xE2\x96\x81";
        else out += c;
    }
    return out;
}

std::string unescape_spaces(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
            out += ' ';
            i += 2;
        } else {
            out += text[i];
        }
    }
    return out;
}

// GPT-2 byte characters back to bytes; a character outside the map is kept as it is.
std::string decode_byte_chars(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
        size_t len = 0;
        const int b = bpe_char_to_byte(text, pos, &len);
        if (b >= 0) out += char(b);
        else out.append(text, pos, len);
        pos += len;
    }
    return out;
}

// "<0xAB>" -> 0xAB; -1 when text is not of that form.
int byte_of_token(const std::string& text) {
    if (text.size() != 6 || text.compare(0, 3, "<0x") != 0 || text[5] != '>' ||
        !std::isxdigit(static_cast<unsigned char>(text[3])) || !std::isxdigit(static_cast<unsigned char>(text[4]))) {
        return -1;
    }
    return std::stoi(text.substr(3, 2), nullptr, 16);
}

}  // namespace

std::vector<int32_t> tokenize(const Vocab& vocab, const std::string& text, bool add_special, bool parse_special) {
    const std::vector<Fragment> frags = partition_special(vocab, text, parse_special);
    std::vector<int32_t> out;
    if (add_special && vocab.add_bos) out.push_back(vocab.bos_id);

    if (vocab.type == VocabType::SPM) {
        bool prev_special = true;  // the text start counts as "after a special token"
        for (const Fragment& f : frags) {
            if (f.token != TOKEN_NONE) {
                out.push_back(f.token);
                prev_special = true;
                continue;
            }
            std::string piece = (vocab.add_space_prefix && prev_special) ? " " : "";
            piece.append(text, f.offset, f.length);
            tokenize_spm(vocab, escape_spaces(piece), out);
            prev_special = false;
        }
    } else {
        for (const Fragment& f : frags) {
            if (f.token != TOKEN_NONE) out.push_back(f.token);
            else tokenize_bpe(vocab, text.substr(f.offset, f.length), out);
        }
    }

    if (add_special && vocab.add_eos) out.push_back(vocab.eos_id);
    return out;
}

std::string token_to_piece(const Vocab& vocab, int32_t id, bool special) {
    if (id < 0 || id >= vocab.n_vocab()) {
        throw Error(strfmt("token id %d is out of range (the vocabulary has %d tokens)", id, vocab.n_vocab()));
    }
    const uint32_t attr = vocab.attrs[size_t(id)];
    if (!special && (attr & (ATTR_CONTROL | ATTR_UNKNOWN))) return "";
    const std::string& text = vocab.tokens[size_t(id)];
    if (attr & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED)) return text;
    const auto normal_piece = [&] {
        return vocab.type == VocabType::SPM ? unescape_spaces(text) : decode_byte_chars(text);
    };
    if (attr & ATTR_NORMAL) return normal_piece();
    if (attr & ATTR_BYTE) {
        const int byte = byte_of_token(text);
        return byte >= 0 ? std::string(1, char(byte)) : normal_piece();  // a byte token not spelled <0xXX>
    }
    return "";  // unused and undefined tokens render as nothing
}

std::string detokenize(const Vocab& vocab, const std::vector<int32_t>& ids, bool special) {
    std::string out;
    bool remove_space = vocab.add_space_prefix;  // only ever the first token's
    for (int32_t id : ids) {
        std::string piece = token_to_piece(vocab, id, special);
        if (remove_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
        remove_space = false;
        out += piece;
    }
    return vocab.clean_spaces ? clean_up_tokenization_spaces(out) : out;
}

std::string clean_up_tokenization_spaces(const std::string& text) {
    if (text.empty()) return text;
    const auto is_punct = [](char c) { return c == '?' || c == '!' || c == '.' || c == ','; };

    // " ?", " !", " .", " ,"
    std::string a(1, text[0]);
    for (size_t i = 1; i < text.size(); ++i) {
        if (text[i - 1] == ' ' && is_punct(text[i])) a.pop_back();
        a += text[i];
    }

    // " ' " -> "'"; the dropped space cannot start another match.
    std::string b(1, a[0]);
    for (size_t i = 1; i < a.size(); ++i) {
        const char x = a[i];
        if (x == '\'' && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
            b.pop_back();
            a[++i] = '\0';
        }
        b += x;
    }

    // " 's", " 'm", " 're", " 've"
    std::string c(1, b[0]);
    for (size_t i = 1; i < b.size(); ++i) {
        const char x = b[i];
        if (b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
            const char x1 = b[i + 1];
            if (x1 == 's' || x1 == 'm') {
                c.pop_back();
            } else if (i + 2 < b.size()) {
                const char x2 = b[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) c.pop_back();
            }
        }
        c += x;
    }
    return c;
}

std::string Detokenizer::push(int32_t id) {
    pending_ += token_to_piece(*vocab_, id, special_);
    const size_t n = utf8_complete_prefix(pending_);
    std::string out = pending_.substr(0, n);
    pending_.erase(0, n);
    return out;
}

std::string Detokenizer::flush() {
    std::string out;
    out.swap(pending_);
    return out;
}

}  // namespace mf
