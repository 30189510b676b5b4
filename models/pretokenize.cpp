// Byte-level BPE pre-tokenizers (see pretokenize.h): a table of tokenizer.ggml.pre names and
// their regex cascades, compiled with PCRE2 (UTF + UCP, JIT when available) and applied per piece.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "models/pretokenize.h"

#include <pcre2.h>

#include <cstring>
#include <utility>

#include "core/common.h"
#include "models/utf8.h"

namespace mf {

namespace {

// GPT-2's pattern without the trailing "|\s+": the lone whitespace it would take is a gap here,
// which becomes a word just the same.
const char* const kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

// Llama 3's pattern with (?i:'s|...) spelled out case by case, as llama.cpp does.
const char* const kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Qwen2: Llama 3's pattern with single digits.
const char* const kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// DeepSeek LLM's letter class, as the HF tokenizer enumerates it.
const char* const kDeepseekLetters =
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";

const char* const kCjk = "[一-龥ࠀ-一가-퟿]+";

struct Rule {
    std::vector<const char*> names;
    std::vector<const char*> regexes;
    bool ignore_merges;
    bool add_bos;
    bool clean_spaces;
};

const std::vector<Rule>& rules() {
    static const std::vector<Rule> table = {
        {{"default"},
         {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"},
         false, false, true},
        {{"gpt-2", "gpt2", "phi-2", "mpt", "olmo"}, {kGpt2}, false, false, true},
        {{"llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe"}, {kLlama3}, true, true, true},
        {{"qwen2", "deepseek-r1-qwen"}, {kQwen2}, false, false, false},
        {{"stablelm2"}, {kQwen2}, false, false, true},
        {{"starcoder", "refact"}, {"\\p{N}", kGpt2}, false, false, true},
        {{"smollm", "command-r"}, {"\\p{N}", kGpt2}, false, false, false},
        {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}, false, false, true},
        {{"deepseek-llm"},
         {"[\r\n]", kDeepseekLetters, "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", kCjk, "\\p{N}+"},
         false, false, false},
        {{"deepseek-coder"},
         {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"},
         false, false, false},
    };
    return table;
}

}  // namespace

struct Pretokenizer::Regex {
    pcre2_code* code = nullptr;
    ~Regex() { pcre2_code_free(code); }
};

Pretokenizer::Pretokenizer(const std::string& pre_name) {
    const std::string pre = pre_name.empty() ? "default" : pre_name;
    const Rule* rule = nullptr;
    for (const auto& r : rules()) {
        for (const char* n : r.names) {
            if (pre == n) rule = &r;
        }
    }
    if (!rule) {
        throw Error("pre-tokenizer '" + pre + "' (tokenizer.ggml.pre) is not supported; supported: " +
                    supported_names());
    }
    ignore_merges_ = rule->ignore_merges;
    add_bos_ = rule->add_bos;
    clean_spaces_ = rule->clean_spaces;
    for (const char* pattern : rule->regexes) {
        int err = 0;
        PCRE2_SIZE err_offset = 0;
        auto re = std::make_unique<Regex>();
        re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &err, &err_offset, nullptr);
        MF_ASSERT_MSG(re->code != nullptr, pattern);
        pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);  // the interpreter runs when JIT is unavailable
        regexes_.push_back(std::move(re));
    }
}

Pretokenizer::~Pretokenizer() = default;

std::string Pretokenizer::supported_names() {
    std::string out;
    for (const auto& r : rules()) {
        for (const char* n : r.names) {
            if (!out.empty()) out += ", ";
            out += n;
        }
    }
    return out;
}

std::vector<std::string> Pretokenizer::split(const std::string& raw) const {
    const std::string text = utf8_sanitize(raw);
    std::vector<std::pair<size_t, size_t>> pieces;  // (offset, length) into text
    if (!text.empty()) pieces.emplace_back(0, text.size());

    for (const auto& re : regexes_) {
        std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
            pcre2_match_data_create_from_pattern(re->code, nullptr), pcre2_match_data_free);
        MF_ASSERT(md != nullptr);
        std::vector<std::pair<size_t, size_t>> next;
        next.reserve(pieces.size() * 2);
        for (const auto& [off, len] : pieces) {
            // The subject is the piece alone, so lookaheads and $ stop at its end.
            const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + off);
            size_t prev = 0, start = 0;
            while (start < len) {
                const int rc = pcre2_match(re->code, subject, len, start, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) {
                    PCRE2_UCHAR msg[256];
                    pcre2_get_error_message(rc, msg, sizeof(msg));
                    throw Error(std::string("pre-tokenizer regex failed: ") + reinterpret_cast<char*>(msg));
                }
                const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
                const size_t ms = ov[0], me = ov[1];
                if (me == ms) {  // an empty match splits nothing; step over one character
                    start = ms + utf8_seq_len(text[off + ms]);
                    continue;
                }
                if (ms > prev) next.emplace_back(off + prev, ms - prev);
                next.emplace_back(off + ms, me - ms);
                prev = start = me;
            }
            if (prev < len) next.emplace_back(off + prev, len - prev);
        }
        pieces = std::move(next);
    }

    std::vector<std::string> words;
    words.reserve(pieces.size());
    for (const auto& [off, len] : pieces) words.emplace_back(text, off, len);
    return words;
}

}  // namespace mf
