// tokenizer.ggml.pre detection (see convert_pretype.h): the tokenizer.json pre-tokenizer is rebuilt as a
// regex cascade, run over probe texts beside each of minfer's pre-tokenizers; only an exact match counts.
#include "models/convert_pretype.h"

#include <nlohmann/json.hpp>

#include <iterator>
#include <memory>
#include <vector>

#include "core/common.h"
#include "core/gguf.h"
#include "models/pretokenize.h"

namespace mf {

namespace {

using json = nlohmann::json;

// Hugging Face's ByteLevel(use_regex=true) pattern (GPT-2's).
const char* const kByteLevelRegex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// minfer's pre-tokenizers under the names llama.cpp's converter writes, most common first.
const char* const kCandidates[] = {
    "llama-bpe", "qwen2", "gpt-2", "smollm", "starcoder", "stablelm2", "qwen35",
    "deepseek-llm", "deepseek-coder", "falcon", "default",
};

// Texts on which the supported splitters differ: contractions, digit runs, whitespace and newline
// runs, punctuation classes, letters of many scripts, combining marks, CJK, emoji.
const char* const kProbes[] = {
    "Hello world, it's 2024! I'm fine; they'LL go. DON'T 's 'S \xE2\x80\x99s",
    "1 12 123 1234 12345 1234567 3.14159 -42 1,000,000 a1b22c333d4444 x\xC2\xBD \xC2\xB2 \xD9\xA1\xD9\xA2\xD9\xA3",
    "  a   b\t\tc\n\n\nd \n \r\n x  \r\r y\n",
    "   leading and trailing   ",
    "na\xC3\xAFve caf\xC3\xA9 \xCE\xA9mega \xC4\x80\xC4\x92 \xC7\x85 \xE1\xBA\x9E \xEF\xAC\x81 \xE2\x85\xAB \xE2\x84\x83 "
    "\xC3\x9F\xC3\xA4\xC3\xB6\xC3\xBC",
    "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC\xD0\xB8\xD1\x80! "
    "\xCE\x93\xCE\xB5\xCE\xB9\xCE\xAC \xCF\x83\xCE\xBF\xCF\x85 \xE1\xBD\xBD\xE1\xBE\x80",
    "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C\xEF\xBC\x8C\xE6\xB5\x8B\xE8\xAF\x95\xE3\x80\x82"
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD\xE3\x82\xB9\xE3\x83\x88 "
    "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94!",
    "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87 "
    "e\xCC\x81t\xC3\xA9 a\xCC\x8A",
    "\xF0\x9F\xA6\x99\xF0\x9F\x9A\x80 \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD emoji!!! ... ???",
    "def f(x):\n    return x**2 + 10_000  # comment\n\tpass\n}\n",
    "$100 + <tag> ^caret ~tilde |pipe| `tick` =eq @at #hash %pct &amp *star",
    "\xEF\xBC\x88\xE5\x85\xA8\xE8\xA7\x92\xEF\xBC\x89\xEF\xBC\x81\xEF\xBC\x9F\xE3\x80\x8C\xE3\x80\x8D\xE3\x80\x81"
    "\xE3\x80\x82 \xE2\x80\x98quotes\xE2\x80\x99 \xE2\x80\x9C" "double\xE2\x80\x9D \xE3\x80\x80wide",
    "end with spaces   ",
    "x",
};

// A pre-tokenizer this converter cannot rebuild: says what it is and how to get past it.
[[noreturn]] void refuse(const std::string& file, const std::string& what) {
    throw Error(file + ": " + what + "; if you know which of minfer's pre-tokenizers splits text the same way, " +
                "pass --pre NAME (one of: " + Pretokenizer::supported_names() + ")");
}

std::string short_regex(const std::string& re) { return re.size() <= 48 ? re : re.substr(0, 45) + "..."; }

// \Q...\E quoting of a literal for PCRE2 (a literal "\E" is split around).
std::string quote_literal(const std::string& s) {
    std::string out = "\\Q";
    for (size_t i = 0; i < s.size(); ++i) {
        if (s.compare(i, 2, "\\E") == 0) {
            out += "\\E\\\\E\\Q";
            ++i;
        } else {
            out += s[i];
        }
    }
    return out + "\\E";
}

// The normalizers llama.cpp leaves out too: NFC (text is assumed composed already).
void check_normalizer(const json& n, const std::string& file, std::string& shape) {
    if (n.is_null()) return;
    const std::string type = n.value("type", "");
    if (type == "NFC") {
        shape += "NFC + ";
        return;
    }
    if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
        for (const json& x : n["normalizers"]) check_normalizer(x, file, shape);
        return;
    }
    refuse(file, "normalizer '" + type + "' is not one minfer implements");
}

// Appends the regexes pt splits with, in order; byte_level is set when a ByteLevel step is present.
void collect(const json& pt, const std::string& file, std::vector<std::string>& regexes, bool& byte_level,
             std::string& shape) {
    if (!pt.is_object()) refuse(file, "pre_tokenizer is missing or not an object");
    const std::string type = pt.value("type", "");
    if (type == "Sequence") {
        if (!pt.contains("pretokenizers") || !pt["pretokenizers"].is_array()) {
            refuse(file, "pre_tokenizer Sequence has no pretokenizers list");
        }
        shape += "Sequence[";
        for (size_t i = 0; i < pt["pretokenizers"].size(); ++i) {
            if (i > 0) shape += ", ";
            collect(pt["pretokenizers"][i], file, regexes, byte_level, shape);
        }
        shape += "]";
    } else if (type == "ByteLevel") {
        if (pt.value("add_prefix_space", false)) refuse(file, "pre_tokenizer ByteLevel with add_prefix_space=true");
        byte_level = true;
        const bool use_regex = pt.value("use_regex", true);
        if (use_regex) regexes.push_back(kByteLevelRegex);
        shape += use_regex ? "ByteLevel" : "ByteLevel(use_regex=false)";
    } else if (type == "Split") {
        const json& pattern = pt.value("pattern", json::object());
        const std::string behavior = pt.value("behavior", "");
        if (behavior != "Isolated" || pt.value("invert", false)) {
            refuse(file, "pre_tokenizer Split with behavior '" + behavior + "'" +
                             (pt.value("invert", false) ? " and invert=true" : "") + " (only Isolated is understood)");
        }
        if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
            regexes.push_back(pattern["Regex"].get<std::string>());
        } else if (pattern.contains("String") && pattern["String"].is_string()) {
            regexes.push_back(quote_literal(pattern["String"].get<std::string>()));
        } else {
            refuse(file, "pre_tokenizer Split has no Regex or String pattern");
        }
        shape += "Split(/" + short_regex(regexes.back()) + "/)";
    } else if (type == "Digits") {
        const bool individual = pt.value("individual_digits", false);
        regexes.push_back(individual ? "\\p{N}" : "\\p{N}+");
        shape += individual ? "Digits(individual)" : "Digits";
    } else {
        refuse(file, "pre_tokenizer '" + type + "' is not one minfer can rebuild");
    }
}

}  // namespace

void check_pre_name(const std::string& name) {
    try {
        Pretokenizer check(name);
    } catch (const Error&) {
        throw Error("--pre '" + name + "' is not a pre-tokenizer minfer implements (one of: " +
                    Pretokenizer::supported_names() + ")");
    }
}

std::string detect_bpe_pre(const json& tok, bool clean_spaces, const std::string& file) {
    std::string shape;
    check_normalizer(tok.value("normalizer", json()), file, shape);
    std::vector<std::string> regexes;
    bool byte_level = false;
    collect(tok.value("pre_tokenizer", json()), file, regexes, byte_level, shape);
    if (!byte_level) refuse(file, "the pre_tokenizer " + shape + " has no ByteLevel step (not a byte-level BPE)");
    std::unique_ptr<Pretokenizer> theirs;
    try {
        theirs = Pretokenizer::from_regexes(regexes);
    } catch (const Error& e) {
        refuse(file, e.what());
    }
    const bool ignore_merges = tok.value("model", json::object()).value("ignore_merges", false);

    std::vector<std::vector<std::string>> expected;
    for (const char* probe : kProbes) expected.push_back(theirs->split(probe));

    std::string same_split;  // a splitter that agrees on the words but not on ignore_merges
    std::string fallback;    // agrees on words and merges, not on clean_up_tokenization_spaces
    for (const char* name : kCandidates) {
        std::unique_ptr<Pretokenizer> ours;
        try {
            ours = std::make_unique<Pretokenizer>(name);
        } catch (const Error&) {
            continue;  // a name this build does not implement
        }
        bool equal = true;
        for (size_t i = 0; equal && i < std::size(kProbes); ++i) equal = ours->split(kProbes[i]) == expected[i];
        if (!equal) continue;
        if (ours->ignore_merges() != ignore_merges) {
            if (same_split.empty()) same_split = name;
            continue;
        }
        if (ours->clean_spaces() == clean_spaces) return name;
        if (fallback.empty()) fallback = name;
    }
    if (!fallback.empty()) return fallback;  // clean_up_tokenization_spaces only changes detokenized spacing
    if (!same_split.empty()) {
        refuse(file, "the pre-tokenizer " + gguf_escape(shape, 300) + " splits like '" + same_split + "' but model.ignore_merges is " +
                         (ignore_merges ? "true" : "false") + " there and not here");
    }
    refuse(file, "the pre-tokenizer " + gguf_escape(shape, 300) + " splits text like none of minfer's pre-tokenizers");
}

}  // namespace mf
