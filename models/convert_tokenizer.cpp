// The tokenizer half of minfer convert (convert_hf_tokenizer in convert.h): tokenizer.json (byte-level
// BPE) or tokenizer.model (SentencePiece) plus the HF config files -> tokenizer.ggml.* keys, as llama.cpp.
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "core/common.h"
#include "core/gguf.h"
#include "models/convert.h"
#include "models/convert_pretype.h"
#include "models/vocab.h"

namespace mf {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The vocabulary being built: texts and types by id; scores for SentencePiece only.
struct VocabOut {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::vector<float> scores;
    std::vector<bool> filled;  // false: an id no file names (a gap), padded later

    int32_t size() const { return int32_t(tokens.size()); }
    void grow(size_t n) {
        if (n <= tokens.size()) return;
        tokens.resize(n);
        types.resize(n, int32_t(TokenType::UNUSED));
        scores.resize(n, -1000.0f);
        filled.resize(n, false);
    }
};

// The JSON document at path; null when the file is absent and not required.
json read_json(const fs::path& path, bool required) {
    if (!fs::exists(path)) {
        if (required) throw Error(path.string() + ": no such file");
        return json();
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path.string() + ": cannot read");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    check_json_depth(text.data(), text.data() + text.size(), path.string());
    try {
        return json::parse(text);
    } catch (const json::exception& e) {
        throw Error(path.string() + ": not valid JSON (" + e.what() + ")");
    }
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path.string() + ": cannot read");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A token named in tokenizer_config.json: a string, an AddedToken dict {"content": ...}, or null ("").
std::string token_text(const json& v, const std::string& file, const std::string& key) {
    if (v.is_null()) return "";
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    throw Error(file + ": " + key + " is neither a string nor a token object with \"content\"");
}

// An id field of a JSON object, checked: a non-negative integer below a sane bound.
int32_t json_id(const json& v, const std::string& file, const std::string& what) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= (int64_t(1) << 30)) {
        throw Error(file + ": " + what + " has an id that is not a non-negative integer");
    }
    return int32_t(v.get<int64_t>());
}

// Sets id to text (type type), growing the vocabulary; an id named twice must agree on its text.
void put_token(VocabOut& v, int32_t id, const std::string& text, TokenType type, const std::string& file) {
    v.grow(size_t(id) + 1);
    if (v.filled[size_t(id)] && v.tokens[size_t(id)] != text) {
        throw Error(file + ": token id " + std::to_string(id) + " is both '" + gguf_escape(v.tokens[size_t(id)], 40) +
                    "' and '" + gguf_escape(text, 40) + "'");
    }
    v.tokens[size_t(id)] = text;
    v.types[size_t(id)] = int32_t(type);
    v.filled[size_t(id)] = true;
}

// Added tokens (tokenizer.json "added_tokens" or tokenizer_config.json "added_tokens_decoder"): special
// ones become CONTROL, the rest USER_DEFINED. SentencePiece tokens that are already unknown/control
// under the same text keep their type.
void add_added_tokens(VocabOut& v, const json& tok_json, const json& config, const std::string& tok_file,
                      const std::string& config_file, bool spm) {
    struct Added {
        int32_t id;
        std::string text;
        bool special;
    };
    std::vector<Added> added;
    if (tok_json.is_object() && tok_json.contains("added_tokens")) {
        for (const json& t : tok_json["added_tokens"]) {
            if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) {
                throw Error(tok_file + ": an added_tokens entry has no \"content\" string");
            }
            added.push_back({json_id(t.value("id", json()), tok_file, "added token"), t["content"].get<std::string>(),
                             t.value("special", false)});
        }
    } else if (config.is_object() && config.contains("added_tokens_decoder")) {
        for (const auto& [key, t] : config["added_tokens_decoder"].items()) {
            int64_t id = -1;
            try {
                id = std::stoll(key);
            } catch (const std::exception&) {
            }
            if (id < 0 || id >= (int64_t(1) << 30) || !t.is_object() || !t.contains("content")) {
                throw Error(config_file + ": added_tokens_decoder entry '" + key + "' is not an id with a token");
            }
            added.push_back({int32_t(id), token_text(t, config_file, "added_tokens_decoder"), t.value("special", false)});
        }
    }
    for (const Added& a : added) {
        const size_t i = size_t(a.id);
        if (spm && i < v.tokens.size() && v.filled[i] && v.tokens[i] == a.text &&
            (v.types[i] == int32_t(TokenType::UNKNOWN) || v.types[i] == int32_t(TokenType::CONTROL))) {
            continue;
        }
        if (i < v.tokens.size()) v.filled[i] = false;  // an added token replaces the model's text for its id
        std::string text = a.text;
        if (!a.special) {  // user-defined tokens are matched in the raw text: U+2581 stands for a space there
            for (size_t p; (p = text.find("\xE2\x96\x81")) != std::string::npos;) text.replace(p, 3, " ");
        }
        put_token(v, a.id, text, a.special ? TokenType::CONTROL : TokenType::USER_DEFINED, tok_file);
        if (spm) v.scores[i] = -1000.0f;
    }
}

// Byte-level BPE from tokenizer.json: vocab, merges ("a b" or ["a", "b"]), pre-tokenizer.
void read_bpe(const json& tok, const std::string& file, VocabOut& v, std::vector<std::string>& merges) {
    const json& model = tok.value("model", json::object());
    const std::string type = model.value("type", "");
    if (type != "BPE") {
        throw Error(file + ": model.type '" + type +
                    "' is not supported (minfer converts byte-level BPE tokenizer.json or SentencePiece tokenizer.model)");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
            throw Error(file + ": model." + key + " is set; minfer's BPE does not support it");
        }
    }
    if (!model.contains("vocab") || !model["vocab"].is_object()) throw Error(file + ": model.vocab is missing or not an object");
    for (const auto& [text, id] : model["vocab"].items()) {
        put_token(v, json_id(id, file, "model.vocab '" + gguf_escape(text, 40) + "'"), text, TokenType::NORMAL, file);
    }
    if (!model.contains("merges") || !model["merges"].is_array()) throw Error(file + ": model.merges is missing or not a list");
    merges.reserve(model["merges"].size());
    for (const json& m : model["merges"]) {
        if (m.is_string() && m.get<std::string>().find(' ', 1) != std::string::npos) {
            merges.push_back(m.get<std::string>());
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
        } else {
            throw Error(file + ": model.merges entry " + std::to_string(merges.size()) +
                        " is neither \"left right\" nor [\"left\", \"right\"]");
        }
    }
}

// SentencePiece pieces, scores and types from tokenizer.model; returns whether it adds a dummy prefix.
bool read_spm(const std::string& file, VocabOut& v) {
    sentencepiece::SentencePieceProcessor sp;
    const auto status = sp.Load(file);
    if (!status.ok()) throw Error(file + ": not a SentencePiece model (" + status.ToString() + ")");
    for (int i = 0; i < sp.GetPieceSize(); ++i) {
        TokenType type = TokenType::NORMAL;
        if (sp.IsUnknown(i)) type = TokenType::UNKNOWN;
        else if (sp.IsControl(i)) type = TokenType::CONTROL;
        else if (sp.IsUnused(i)) type = TokenType::UNUSED;
        else if (sp.IsByte(i)) type = TokenType::BYTE;
        put_token(v, i, sp.IdToPiece(i), type, file);
        v.scores[size_t(i)] = sp.GetScore(i);
    }
    // The normalizer spec is not exposed, so its effects are probed. minfer (as llama.cpp) keeps runs of
    // spaces: a model whose normalizer collapses them would tokenize differently.
    if (sp.DecodeIds(sp.EncodeAsIds("a  b")) != "a  b") {
        throw Error(file + ": the SentencePiece normalizer removes extra whitespace, which minfer's tokenizer does not");
    }
    // A model with add_dummy_prefix turns "x" into "\u2581x".
    const std::vector<std::string> pieces = sp.EncodeAsPieces("x");
    return !pieces.empty() && (pieces[0].rfind("\xE2\x96\x81", 0) == 0 || pieces[0] == "<0xE2>");
}

// Ids no file names become unused "[PADi]" tokens, as llama.cpp fills them.
void fill_gaps(VocabOut& v) {
    for (int32_t i = 0; i < v.size(); ++i) {
        if (v.filled[size_t(i)]) continue;
        v.tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
        v.types[size_t(i)] = int32_t(TokenType::UNUSED);
    }
}

// The post-processor's TemplateProcessing "single" template (possibly inside a Sequence), or null.
const json* single_template(const json& pp) {
    if (!pp.is_object()) return nullptr;
    if (pp.value("type", "") == "TemplateProcessing" && pp.contains("single") && pp["single"].is_array()) {
        return &pp["single"];
    }
    if (pp.value("type", "") == "Sequence" && pp.contains("processors")) {
        for (const json& p : pp["processors"]) {
            if (const json* t = single_template(p)) return t;
        }
    }
    return nullptr;
}

struct Specials {
    int32_t bos = TOKEN_NONE, eos = TOKEN_NONE, eot = TOKEN_NONE, eom = TOKEN_NONE, unk = TOKEN_NONE,
            pad = TOKEN_NONE;
    int add_bos = -1, add_eos = -1;  // -1: not said
};

// Special ids and add_bos/add_eos from tokenizer_config.json, the post-processor, generation_config.json
// and config.json, in that order of preference.
Specials read_specials(const fs::path& dir, const json& tok_json, const json& config, const VocabOut& v) {
    const std::string config_file = (dir / "tokenizer_config.json").string();
    std::unordered_map<std::string, int32_t> ids;
    for (int32_t i = v.size() - 1; i >= 0; --i) ids[v.tokens[size_t(i)]] = i;  // the lowest id wins
    Specials s;
    const std::pair<const char*, int32_t*> named[] = {
        {"bos_token", &s.bos}, {"eos_token", &s.eos}, {"unk_token", &s.unk}, {"pad_token", &s.pad}};
    for (const auto& [key, id] : named) {
        if (!config.is_object() || !config.contains(key)) continue;
        const std::string text = token_text(config[key], config_file, key);
        if (text.empty()) continue;
        const auto it = ids.find(text);
        if (it == ids.end()) {
            throw Error(config_file + ": " + key + " '" + gguf_escape(text, 60) + "' is not in the vocabulary");
        }
        *id = it->second;
    }
    for (const auto& [key, flag] : {std::pair<const char*, int*>{"add_bos_token", &s.add_bos}, {"add_eos_token", &s.add_eos}}) {
        if (config.is_object() && config.contains(key) && config[key].is_boolean()) *flag = config[key].get<bool>();
    }

    // A TemplateProcessing "single" of [SpecialToken, $A] adds BOS; [$A, SpecialToken] adds EOS.
    const json post = tok_json.is_object() ? tok_json.value("post_processor", json()) : json();
    if (const json* single = single_template(post)) {
        const auto special_id = [&](const json& item) -> int32_t {
            if (!item.is_object() || !item.contains("SpecialToken")) return TOKEN_NONE;
            const auto it = ids.find(item["SpecialToken"].value("id", ""));
            return it == ids.end() ? TOKEN_NONE : it->second;
        };
        if (!single->empty()) {
            const int32_t first = special_id(single->front()), last = special_id(single->back());
            if (s.add_bos < 0) s.add_bos = first != TOKEN_NONE;
            if (s.add_eos < 0) s.add_eos = last != TOKEN_NONE && single->size() > 1;
            if (s.bos == TOKEN_NONE && first != TOKEN_NONE) s.bos = first;
            if (s.eos == TOKEN_NONE && last != TOKEN_NONE && single->size() > 1) s.eos = last;
        }
    }

    // generation_config.json: eos_token_id is one id or a list; ids past the EOS become EOT, then EOM.
    const std::string gen_file = (dir / "generation_config.json").string();
    const json gen = read_json(gen_file, false);
    std::vector<int32_t> eos_ids;
    if (gen.is_object() && gen.contains("eos_token_id") && !gen["eos_token_id"].is_null()) {
        const json& e = gen["eos_token_id"];
        if (e.is_array()) {
            for (const json& x : e) eos_ids.push_back(json_id(x, gen_file, "eos_token_id"));
        } else {
            eos_ids.push_back(json_id(e, gen_file, "eos_token_id"));
        }
    }
    const std::string model_config_file = (dir / "config.json").string();
    const json model_config = read_json(model_config_file, false);
    for (const auto& [key, id] : {std::pair<const char*, int32_t*>{"bos_token_id", &s.bos}, {"eos_token_id", &s.eos}}) {
        for (const auto& [src, src_file] : {std::pair<const json*, const std::string*>{&gen, &gen_file},
                                            {&model_config, &model_config_file}}) {
            if (*id != TOKEN_NONE || !src->is_object() || !src->contains(key)) continue;
            const json& x = (*src)[key];
            if (x.is_number_integer()) *id = json_id(x, *src_file, key);
            else if (x.is_array() && !x.empty()) *id = json_id(x[0], *src_file, key);
        }
    }
    for (int32_t id : eos_ids) {
        if (id >= v.size()) {
            throw Error(gen_file + ": eos_token_id " + std::to_string(id) + " is outside the vocabulary (" +
                        std::to_string(v.size()) + " tokens)");
        }
        if (id == s.eos || id == s.eot || id == s.eom) continue;
        if (v.tokens[size_t(id)] == "<|eom_id|>" && s.eom == TOKEN_NONE) s.eom = id;
        else if (s.eot == TOKEN_NONE) s.eot = id;
        else if (s.eom == TOKEN_NONE) s.eom = id;
        else throw Error(gen_file + ": eos_token_id lists more end-of-generation ids than GGUF records (eos, eot, eom)");
    }
    for (int32_t id : {s.bos, s.eos, s.unk, s.pad}) {
        if (id >= v.size()) {
            throw Error(config_file + ": special token id " + std::to_string(id) + " is outside the vocabulary (" +
                        std::to_string(v.size()) + " tokens)");
        }
    }
    return s;
}

// tokenizer.chat_template from tokenizer_config.json (a string, or a list of {name, template} whose
// "default" is the main one and the rest tokenizer.chat_template.<name>), else chat_template.jinja.
void write_chat_templates(const fs::path& dir, const json& config, GGUFWriter& w) {
    const std::string file = (dir / "tokenizer_config.json").string();
    const json t = config.is_object() ? config.value("chat_template", json()) : json();
    if (t.is_string()) {
        w.set_str("tokenizer.chat_template", t.get<std::string>());
    } else if (t.is_array()) {
        std::vector<std::string> names;
        for (const json& item : t) {
            if (!item.is_object() || !item.contains("name") || !item["name"].is_string() || !item.contains("template") ||
                !item["template"].is_string()) {
                throw Error(file + ": chat_template list entries must be {\"name\": ..., \"template\": ...}");
            }
            const std::string name = item["name"].get<std::string>();
            if (name == "default") {
                w.set_str("tokenizer.chat_template", item["template"].get<std::string>());
            } else {
                w.set_str("tokenizer.chat_template." + name, item["template"].get<std::string>());
                names.push_back(name);
            }
        }
        if (!names.empty()) w.set_array_str("tokenizer.chat_templates", names);
    } else if (!t.is_null()) {
        throw Error(file + ": chat_template is neither a string nor a list of named templates");
    } else if (fs::exists(dir / "chat_template.jinja")) {
        w.set_str("tokenizer.chat_template", read_text(dir / "chat_template.jinja"));
    }
}

// config.json's vocab_size (or text_config.vocab_size): the embedding rows the tokens are padded to.
int64_t model_vocab_size(const fs::path& dir) {
    const json c = read_json(dir / "config.json", false);
    if (!c.is_object()) return 0;
    for (const json* src : {&c, c.contains("text_config") ? &c["text_config"] : nullptr}) {
        if (src && src->is_object() && src->contains("vocab_size") && (*src)["vocab_size"].is_number_integer()) {
            const int64_t n = (*src)["vocab_size"].get<int64_t>();
            if (n > 0 && n < (int64_t(1) << 30)) return n;
        }
    }
    return 0;
}

}  // namespace

namespace {

void convert_tokenizer_files(const std::string& hf_dir, const std::string& pre_override, GGUFWriter& w) {
    const fs::path dir(hf_dir);
    const fs::path spm_path = dir / "tokenizer.model", json_path = dir / "tokenizer.json";
    const std::string config_file = (dir / "tokenizer_config.json").string();
    const json config = read_json(config_file, false);
    const bool spm = fs::exists(spm_path);
    if (!spm && !fs::exists(json_path)) {
        throw Error(hf_dir + ": no tokenizer.json or tokenizer.model (minfer converts byte-level BPE or SentencePiece)");
    }
    const json tok_json = read_json(json_path, false);

    VocabOut v;
    std::vector<std::string> merges;
    bool add_space_prefix = false;
    std::string pre = "default";
    if (spm) {
        if (!pre_override.empty()) check_pre_name(pre_override);  // valid, but SentencePiece has no pre-tokenizer
        add_space_prefix = read_spm(spm_path.string(), v);
    } else {
        read_bpe(tok_json, json_path.string(), v, merges);
        if (!pre_override.empty()) {
            check_pre_name(pre_override);
            pre = pre_override;
        } else {
            const bool clean = config.is_object() && config.contains("clean_up_tokenization_spaces") &&
                                       config["clean_up_tokenization_spaces"].is_boolean()
                                   ? config["clean_up_tokenization_spaces"].get<bool>()
                                   : true;
            pre = detect_bpe_pre(tok_json, clean, json_path.string());
        }
    }
    add_added_tokens(v, tok_json, config, json_path.string(), config_file, spm);
    v.grow(size_t(model_vocab_size(dir)));
    fill_gaps(v);

    std::unordered_map<std::string, int32_t> seen;
    for (int32_t i = 0; i < v.size(); ++i) {
        const auto [it, inserted] = seen.emplace(v.tokens[size_t(i)], i);
        if (!inserted) {
            throw Error(hf_dir + ": token '" + gguf_escape(v.tokens[size_t(i)], 60) + "' has two ids (" +
                        std::to_string(it->second) + " and " + std::to_string(i) + ")");
        }
    }

    Specials s = read_specials(dir, tok_json, config, v);
    if (spm) {
        if (s.add_bos < 0) s.add_bos = 1;  // LlamaTokenizer's default
        if (s.unk == TOKEN_NONE) {
            for (int32_t i = 0; i < v.size() && s.unk == TOKEN_NONE; ++i) {
                if (v.types[size_t(i)] == int32_t(TokenType::UNKNOWN)) s.unk = i;
            }
        }
    }
    if (s.add_bos > 0 && s.bos == TOKEN_NONE) throw Error(config_file + ": add_bos_token is true but no bos_token is named");
    if (s.add_eos > 0 && s.eos == TOKEN_NONE) throw Error(config_file + ": add_eos_token is true but no eos_token is named");

    w.set_str("tokenizer.ggml.model", spm ? "llama" : "gpt2");
    w.set_str("tokenizer.ggml.pre", pre);
    w.set_array_str("tokenizer.ggml.tokens", v.tokens);
    if (spm) w.set("tokenizer.ggml.scores", GGUFMetaValue::array_f32(v.scores));
    w.set("tokenizer.ggml.token_type", GGUFMetaValue::array_i32(v.types));
    if (!spm) w.set_array_str("tokenizer.ggml.merges", merges);
    const std::pair<const char*, int32_t> ids[] = {
        {"tokenizer.ggml.bos_token_id", s.bos}, {"tokenizer.ggml.eos_token_id", s.eos},
        {"tokenizer.ggml.eot_token_id", s.eot}, {"tokenizer.ggml.eom_token_id", s.eom},
        {"tokenizer.ggml.unknown_token_id", s.unk}, {"tokenizer.ggml.padding_token_id", s.pad},
    };
    for (const auto& [key, id] : ids) {
        if (id != TOKEN_NONE) w.set_u32(key, uint32_t(id));
    }
    w.set_bool("tokenizer.ggml.add_bos_token", s.add_bos > 0);
    w.set_bool("tokenizer.ggml.add_eos_token", s.add_eos > 0);
    if (spm) w.set_bool("tokenizer.ggml.add_space_prefix", add_space_prefix);
    write_chat_templates(dir, config, w);
}

}  // namespace

void convert_hf_tokenizer(const std::string& hf_dir, const std::string& pre_override, GGUFWriter& w) {
    try {
        convert_tokenizer_files(hf_dir, pre_override, w);
    } catch (const json::exception& e) {  // a field of an unexpected JSON type
        throw Error(hf_dir + ": a tokenizer file has an unexpected structure (" + e.what() + ")");
    }
}

}  // namespace mf
