// Loading and validating a tokenizer vocabulary from GGUF metadata (see vocab.h). Defaults and the
// by-name fixes (end-of-generation tokens, Phi-3's whitespace stripping) follow llama.cpp.
#include "models/vocab.h"

#include <algorithm>
#include <cctype>
#include <climits>

#include "core/common.h"
#include "core/gguf.h"
#include "models/pretokenize.h"

namespace mf {

int32_t Vocab::find(const std::string& text) const {
    const auto it = token_to_id.find(text);
    return it == token_to_id.end() ? TOKEN_NONE : it->second;
}

int32_t Vocab::merge_rank(const std::string& left, const std::string& right) const {
    std::string key;
    key.reserve(left.size() + 1 + right.size());
    key += left;
    key += ' ';
    key += right;
    const auto it = merge_ranks.find(key);
    return it == merge_ranks.end() ? -1 : it->second;
}

bool Vocab::is_eog(int32_t id) const { return std::binary_search(eog_ids.begin(), eog_ids.end(), id); }

namespace {

// End-of-turn tokens, in the order of preference when the file names no eot id.
const char* const kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
};

// Tokens that end generation wherever they appear in the vocabulary.
const char* const kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>", "<｜end▁of▁sentence｜>",
};

uint32_t attr_of_type(TokenType t) {
    switch (t) {
        case TokenType::NORMAL: return ATTR_NORMAL;
        case TokenType::UNKNOWN: return ATTR_UNKNOWN;
        case TokenType::CONTROL: return ATTR_CONTROL;
        case TokenType::USER_DEFINED: return ATTR_USER_DEFINED;
        case TokenType::UNUSED: return ATTR_UNUSED;
        case TokenType::BYTE: return ATTR_BYTE;
        case TokenType::UNDEFINED: return ATTR_UNDEFINED;
    }
    return ATTR_UNDEFINED;
}

}  // namespace

Vocab load_vocab(const GGUFFile& file) {
    const std::string& fname = file.name();
    const auto fail = [&](const std::string& what) { return Error(fname + ": " + what); };

    Vocab v;
    if (!file.has("tokenizer.ggml.model")) throw fail("no tokenizer.ggml.model: the file carries no vocabulary");
    v.model = file.get_str("tokenizer.ggml.model");
    v.pre = file.get_str("tokenizer.ggml.pre", "");

    if (v.model == "llama") {
        v.type = VocabType::SPM;
        v.bos_id = 1;
        v.eos_id = 2;
        v.unk_id = 0;
        v.add_bos = true;
        v.add_space_prefix = true;
        v.clean_spaces = false;
    } else if (v.model == "gpt2") {
        // llama.cpp defaults bos/eos to 11 here (a Falcon id); minfer leaves them unset instead,
        // so a file without them cannot stop generation at an ordinary token.
        v.type = VocabType::BPE;
        if (v.pre.empty()) v.pre = "default";
        try {
            v.pretokenizer = std::make_shared<const Pretokenizer>(v.pre);
        } catch (const Error& e) {
            throw fail(e.what());
        }
        v.ignore_merges = v.pretokenizer->ignore_merges();
        v.add_bos = v.pretokenizer->add_bos();
        v.clean_spaces = v.pretokenizer->clean_spaces();
    } else {
        const std::string supported = " (minfer supports 'llama' (SentencePiece) and 'gpt2' (byte-level BPE))";
        if (v.model == "bert") throw fail("tokenizer model 'bert' (WordPiece) is not supported" + supported);
        if (v.model == "t5") throw fail("tokenizer model 't5' (Unigram) is not supported" + supported);
        if (v.model == "rwkv") throw fail("tokenizer model 'rwkv' (RWKV trie) is not supported" + supported);
        if (v.model == "no_vocab" || v.model == "none") {
            throw fail("the file carries no vocabulary (tokenizer.ggml.model '" + v.model + "')");
        }
        throw fail("tokenizer model '" + v.model + "' is not supported" + supported);
    }
    v.add_space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);

    // Tokens, scores, types.
    const GGUFValue& tokens = file.get_array("tokenizer.ggml.tokens", GGUFType::STRING);
    const uint64_t n = tokens.size();
    if (n == 0) throw fail("tokenizer.ggml.tokens is empty");
    if (n > uint64_t(INT32_MAX)) throw fail("tokenizer.ggml.tokens has too many tokens");
    v.tokens.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
        std::string text(tokens.str(i));
        if (text.empty()) text = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp, so ids stay unique
        v.tokens.push_back(std::move(text));
    }

    if (const GGUFValue* scores = file.find("tokenizer.ggml.scores")) {
        const bool numeric = scores->is_array() &&
                             (scores->elem_type() == GGUFType::FLOAT32 || scores->elem_type() == GGUFType::INT32);
        if (!numeric) {
            throw fail("tokenizer.ggml.scores must be an array of f32 (or i32), not " + scores->type_str());
        }
        if (scores->size() != n) {
            throw fail(strfmt("tokenizer.ggml.scores has %llu entries for %llu tokens",
                              (unsigned long long)scores->size(), (unsigned long long)n));
        }
        v.scores = scores->to_f32_vector();
    } else {
        v.scores.assign(n, 0.0f);
    }

    v.token_types.assign(n, TokenType::NORMAL);
    if (const GGUFValue* types = file.find("tokenizer.ggml.token_type")) {
        if (!types->is_array() || types->elem_type() != GGUFType::INT32) {
            throw fail("tokenizer.ggml.token_type must be an array of i32, not " + types->type_str());
        }
        if (types->size() != n) {
            throw fail(strfmt("tokenizer.ggml.token_type has %llu entries for %llu tokens",
                              (unsigned long long)types->size(), (unsigned long long)n));
        }
        const std::vector<int32_t> raw = types->to_i32_vector();
        for (uint64_t i = 0; i < n; ++i) {
            if (raw[i] < 0 || raw[i] > int32_t(TokenType::BYTE)) {
                throw fail(strfmt("tokenizer.ggml.token_type[%llu] = %d is not a token type (0..6)",
                                  (unsigned long long)i, raw[i]));
            }
            v.token_types[i] = TokenType(raw[i]);
        }
    }
    v.attrs.resize(n);
    for (uint64_t i = 0; i < n; ++i) v.attrs[i] = attr_of_type(v.token_types[i]);

    v.token_to_id.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
        const auto [it, inserted] = v.token_to_id.emplace(v.tokens[i], int32_t(i));
        if (!inserted) {
            throw fail(strfmt("duplicate token '%s' (ids %d and %llu)", v.tokens[i].c_str(), it->second,
                              (unsigned long long)i));
        }
    }

    // BPE merges: "left right", rank = index. llama.cpp splits at the first space after the first
    // byte, so a merge may start with a space.
    if (v.type == VocabType::BPE) {
        if (!file.has("tokenizer.ggml.merges")) {
            throw fail("tokenizer.ggml.merges is missing (a BPE vocabulary needs it)");
        }
        const GGUFValue& merges = file.get_array("tokenizer.ggml.merges", GGUFType::STRING);
        v.merges.reserve(merges.size());
        v.merge_ranks.reserve(merges.size());
        for (uint64_t i = 0; i < merges.size(); ++i) {
            std::string m(merges.str(i));
            if (m.find(' ', 1) == std::string::npos) {
                throw fail(strfmt("tokenizer.ggml.merges[%llu] = '%s' is not 'left right'", (unsigned long long)i,
                                  m.c_str()));
            }
            v.merge_ranks.emplace(m, int32_t(i));  // a repeated merge keeps its first (best) rank
            v.merges.push_back(std::move(m));
        }
    }

    // Special ids: a default that does not fit the vocabulary is dropped; an id the file gives must fit.
    const std::pair<const char*, int32_t*> ids[] = {
        {"tokenizer.ggml.bos_token_id", &v.bos_id},      {"tokenizer.ggml.eos_token_id", &v.eos_id},
        {"tokenizer.ggml.eot_token_id", &v.eot_id},      {"tokenizer.ggml.eom_token_id", &v.eom_id},
        {"tokenizer.ggml.unknown_token_id", &v.unk_id},  {"tokenizer.ggml.padding_token_id", &v.pad_id},
        {"tokenizer.ggml.seperator_token_id", &v.sep_id},
    };
    for (const auto& [key, id] : ids) {
        if (*id >= v.n_vocab()) *id = TOKEN_NONE;
        const GGUFValue* val = file.find(key);
        if (!val) continue;
        const uint64_t x = val->as_u64();  // a negative id fails here, naming the key
        if (x >= uint64_t(v.n_vocab())) {
            throw fail(strfmt("%s = %llu is out of range (the vocabulary has %d tokens)", key, (unsigned long long)x,
                              v.n_vocab()));
        }
        *id = int32_t(x);
    }

    v.add_bos = file.get_bool("tokenizer.ggml.add_bos_token", v.add_bos);
    v.add_eos = file.get_bool("tokenizer.ggml.add_eos_token", v.add_eos);
    if (v.add_bos && v.bos_id == TOKEN_NONE) {
        throw fail("tokenizer.ggml.add_bos_token is true but there is no BOS token");
    }
    if (v.add_eos && v.eos_id == TOKEN_NONE) {
        throw fail("tokenizer.ggml.add_eos_token is true but there is no EOS token");
    }

    // End of turn / message by text when the file does not say; such tokens count as control.
    const auto mark_control = [&](int32_t id) { v.attrs[size_t(id)] |= ATTR_CONTROL; };
    if (v.eot_id == TOKEN_NONE) {
        for (const char* text : kEotTexts) {
            const int32_t id = v.find(text);
            if (id != TOKEN_NONE) {
                v.eot_id = id;
                mark_control(id);
                break;
            }
        }
    }
    if (v.eom_id == TOKEN_NONE) {
        v.eom_id = v.find("<|eom_id|>");
        if (v.eom_id != TOKEN_NONE) mark_control(v.eom_id);
    }

    for (int32_t id : {v.eos_id, v.eot_id, v.eom_id}) {
        if (id != TOKEN_NONE) v.eog_ids.push_back(id);
    }
    for (const char* text : kEogTexts) {
        const int32_t id = v.find(text);
        if (id == TOKEN_NONE) continue;
        v.eog_ids.push_back(id);
        mark_control(id);
    }
    std::sort(v.eog_ids.begin(), v.eog_ids.end());
    v.eog_ids.erase(std::unique(v.eog_ids.begin(), v.eog_ids.end()), v.eog_ids.end());

    // Tokens matched whole in the text before the tokenizer runs, longest first.
    for (int32_t id = 0; id < v.n_vocab(); ++id) {
        if (v.has_attr(id, ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) v.special_ids.push_back(id);
    }
    std::stable_sort(v.special_ids.begin(), v.special_ids.end(), [&](int32_t a, int32_t b) {
        return v.tokens[size_t(a)].size() > v.tokens[size_t(b)].size();
    });

    // Phi-3's special tokens swallow the whitespace that follows them (its chat template puts a
    // newline after each), except <unk>, <s> and <|endoftext|>; llama.cpp recognizes it by name.
    std::string name = file.get_str("general.name", "");
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
        for (int32_t id : v.special_ids) v.attrs[size_t(id)] |= ATTR_RSTRIP;
        if (const int32_t id = v.find("</s>"); id != TOKEN_NONE) v.attrs[size_t(id)] |= ATTR_RSTRIP;
        for (const char* text : {"<unk>", "<s>", "<|endoftext|>"}) {
            if (const int32_t id = v.find(text); id != TOKEN_NONE) v.attrs[size_t(id)] &= ~uint32_t(ATTR_RSTRIP);
        }
    }
    return v;
}

}  // namespace mf
