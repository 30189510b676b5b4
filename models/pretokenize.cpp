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

// Qwen3.5: Qwen2's pattern with combining marks (\p{M}) kept inside words.
const char* const kQwen35 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// DeepSeek LLM's letter class, as the HF tokenizer enumerates it. Non-ASCII characters are written as
// code points throughout: text tools that NFC-normalize would turn U+1F7D into U+03CE and break a range.
const char* const kDeepseekLetters =
    "\\s?["
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}"
    "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}"
    "\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}"
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"
    "]+";

// CJK ideographs, U+0800..U+4E00 and Hangul, as in the DeepSeek tokenizers, by code point.
const char* const kCjk = "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";

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
        {{"qwen35"}, {kQwen35}, false, false, false},
        {{"starcoder", "refact"}, {"\\p{N}", kGpt2}, false, false, true},
        {{"smollm", "command-r"}, {"\\p{N}", kGpt2}, false, false, false},
        {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}, false, false, true},
        {{"deepseek-llm"},
         {"[\r\n]", kDeepseekLetters,
          "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+", "\\s+$", kCjk,
          "\\p{N}+"},
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
        std::string err;
        MF_ASSERT_MSG(add_regex(pattern, err), pattern);
    }
}

std::unique_ptr<Pretokenizer> Pretokenizer::from_regexes(const std::vector<std::string>& regexes) {
    std::unique_ptr<Pretokenizer> p(new Pretokenizer());
    for (const std::string& pattern : regexes) {
        std::string err;
        if (!p->add_regex(pattern.c_str(), err)) throw Error("pre-tokenizer regex '" + pattern + "': " + err);
    }
    return p;
}

bool Pretokenizer::add_regex(const char* pattern, std::string& err) {
    int code = 0;
    PCRE2_SIZE err_offset = 0;
    auto re = std::make_unique<Regex>();
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &err_offset, nullptr);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        err = reinterpret_cast<char*>(msg);
        return false;
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);  // the interpreter runs when JIT is unavailable
    regexes_.push_back(std::move(re));
    return true;
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
