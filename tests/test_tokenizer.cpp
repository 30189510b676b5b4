// Tokenizers: every shared vocabulary suite (llama.cpp's golden .inp/.out ids) reproduced exactly,
// detokenization round trips, special-token parsing, streaming UTF-8, and malformed vocabularies.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/common.h"
#include "core/gguf.h"
#include "models/pretokenize.h"
#include "models/tokenizer.h"
#include "models/utf8.h"
#include "models/vocab.h"
#include "test_util.h"

using namespace mf;
namespace fs = std::filesystem;

namespace {

struct Case {
    std::string text;
    std::vector<int32_t> ids;
};

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in, "cannot read " << path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The suite beside a vocabulary, read as llama.cpp's tests/test-tokenizer-0.cpp does: .inp holds the
// texts separated by "\n__ggml_vocab_test__\n"; line i of .out holds text i's ids.
std::vector<Case> read_cases(const std::string& gguf_path) {
    const std::string raw = read_all(gguf_path + ".inp");
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> texts;
    for (size_t pos = 0; pos < raw.size();) {
        const size_t next = raw.find(sep, pos);
        if (next == std::string::npos) {
            texts.push_back(raw.substr(pos));
            break;
        }
        texts.push_back(raw.substr(pos, next - pos));
        pos = next + sep.size();
    }
    std::istringstream out(read_all(gguf_path + ".out"));
    std::vector<Case> cases;
    std::string line;
    for (size_t i = 0; std::getline(out, line); ++i) {
        REQUIRE_MESSAGE(i < texts.size(), gguf_path << ".out has more lines than .inp has texts");
        Case c{texts[i], {}};
        std::istringstream ids(line);
        for (int32_t id; ids >> id;) c.ids.push_back(id);
        cases.push_back(std::move(c));
    }
    REQUIRE_MESSAGE(cases.size() == texts.size(), gguf_path << ": .inp and .out hold different numbers of cases");
    return cases;
}

// Every shared vocabulary that comes with a suite, by path, sorted.
std::vector<std::string> suite_vocabs() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(mf_test::shared_path("vocab"))) {
        const std::string p = e.path().string();
        if (e.path().extension() == ".gguf" && fs::exists(p + ".inp") && fs::exists(p + ".out")) out.push_back(p);
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::string join(const std::vector<int32_t>& ids) {
    std::string s = "[";
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
    return s + "]";
}

// A test text for a failure message: control characters and non-UTF-8 bytes escaped.
std::string shown(const std::string& text) {
    std::string s;
    for (unsigned char c : text) {
        if (c == '\n') s += "\\n";
        else if (c == '\t') s += "\\t";
        else if (c < 0x20) s += strfmt("\\x%02X", c);
        else s += char(c);
    }
    return s;
}

Vocab load(const std::string& name) {
    const GGUFFile file = GGUFFile::open(mf_test::shared_path("vocab/ggml-vocab-" + name + ".gguf"));
    return load_vocab(file);
}

// A vocab-only GGUF file written from the given metadata, removed when the object goes.
struct TempVocab {
    std::string path;
    explicit TempVocab(const GGUFWriter& w) {
        const std::string name = "minfer_test_vocab_" + std::to_string(mf_test::rng()()) + ".gguf";
        path = (fs::temp_directory_path() / name).string();
        w.write(path);
    }
    ~TempVocab() { std::remove(path.c_str()); }
};

// A tiny SPM vocabulary: <unk> <s> </s>, the 256 byte tokens, then a few pieces.
GGUFWriter tiny_spm() {
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<int32_t> types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
        tokens.push_back(strfmt("<0x%02X>", b));
        types.push_back(6);
    }
    for (const char* t : {"\xE2\x96\x81", "a", "b", "ab", "\xE2\x96\x81" "ab"}) {
        tokens.push_back(t);
        types.push_back(1);
    }
    std::vector<float> scores(tokens.size(), 0.0f);
    for (size_t i = 259; i < tokens.size(); ++i) scores[i] = -float(i);
    GGUFWriter w;
    w.set_str("general.architecture", "llama");
    w.set_str("tokenizer.ggml.model", "llama");
    w.set_array_str("tokenizer.ggml.tokens", tokens);
    w.set("tokenizer.ggml.scores", GGUFMetaValue::array_f32(scores));
    w.set("tokenizer.ggml.token_type", GGUFMetaValue::array_i32(types));
    return w;
}

// Loading w's vocabulary fails with a message that contains expected.
void check_load_error(const GGUFWriter& w, const std::string& expected) {
    TempVocab tmp(w);
    const GGUFFile file = GGUFFile::open(tmp.path);
    std::string what;
    try {
        load_vocab(file);
    } catch (const Error& e) {
        what = e.what();
    }
    INFO("error: " << what);
    CHECK(what.find(expected) != std::string::npos);
    CHECK(what.find('\n') == std::string::npos);  // one line
}

}  // namespace

TEST_CASE("tokenize reproduces llama.cpp's ids on every shared vocabulary suite") {
    const std::vector<std::string> vocabs = suite_vocabs();
    REQUIRE(vocabs.size() >= 5);
    for (const std::string& path : vocabs) {
        const std::string name = fs::path(path).stem().string();
        const std::vector<Case> cases = read_cases(path);
        const GGUFFile file = GGUFFile::open(path);
        if (file.get_str("tokenizer.ggml.model", "") == "bert") {
            // WordPiece (BERT embedding models) is not implemented; loading says so in one line.
            CHECK_THROWS_WITH_AS(load_vocab(file), doctest::Contains("(WordPiece) is not supported"), Error);
            MESSAGE(name << ": skipped: WordPiece tokenizers (tokenizer.ggml.model 'bert') are not supported");
            continue;
        }
        const Vocab vocab = load_vocab(file);
        size_t passed = 0;
        for (size_t i = 0; i < cases.size(); ++i) {
            // llama.cpp's suite runs with add_special = false, parse_special = false.
            const std::vector<int32_t> got = tokenize(vocab, cases[i].text, false, false);
            if (got == cases[i].ids) {
                ++passed;
            } else {
                FAIL_CHECK(name << " case " << i << " '" << shown(cases[i].text) << "'\n  expected "
                                << join(cases[i].ids) << "\n  got      " << join(got));
            }
        }
        MESSAGE(name << ": " << passed << "/" << cases.size() << " cases match");
        CHECK(passed == cases.size());
    }
}

TEST_CASE("detokenize(tokenize(text)) gives the text back (after the vocabulary's space cleanup)") {
    for (const std::string& path : suite_vocabs()) {
        const GGUFFile file = GGUFFile::open(path);
        if (file.get_str("tokenizer.ggml.model", "") == "bert") continue;
        const Vocab vocab = load_vocab(file);
        for (const Case& c : read_cases(path)) {
            // SPM's added space prefix is dropped again; byte-level BPE is lossless except for
            // clean_up_tokenization_spaces, which GPT-2-style vocabularies apply on decode.
            const std::string expected = vocab.clean_spaces ? clean_up_tokenization_spaces(c.text) : c.text;
            const std::string got = detokenize(vocab, tokenize(vocab, c.text, false, false));
            CHECK_MESSAGE(got == expected, fs::path(path).stem().string()
                                               << ": '" << shown(c.text) << "' came back as '" << shown(got) << "'");
        }
    }
}

TEST_CASE("add_special follows the vocabulary's add_bos flag") {
    const Vocab spm = load("llama-spm");
    CHECK(spm.add_bos);
    CHECK(tokenize(spm, "Hello world", true, false) == std::vector<int32_t>{1, 15043, 3186});
    CHECK(tokenize(spm, "", true, false) == std::vector<int32_t>{1});
    CHECK(tokenize(spm, "", false, false).empty());

    const Vocab gpt2 = load("gpt-2");
    CHECK_FALSE(gpt2.add_bos);
    CHECK(tokenize(gpt2, "Hello", true, false) == tokenize(gpt2, "Hello", false, false));

    const Vocab deepseek = load("deepseek-coder");
    CHECK(deepseek.add_bos);
    const std::vector<int32_t> ids = tokenize(deepseek, "Hello", true, false);
    REQUIRE(!ids.empty());
    CHECK(ids[0] == deepseek.bos_id);
}

TEST_CASE("special tokens in the text parse as single ids only when asked") {
    const Vocab spm = load("llama-spm");
    const std::vector<int32_t> parsed = tokenize(spm, "<s>Hello</s>", false, true);
    REQUIRE(parsed.size() >= 3);
    CHECK(parsed.front() == 1);
    CHECK(parsed.back() == 2);
    const std::vector<int32_t> literal = tokenize(spm, "<s>Hello</s>", false, false);
    CHECK(std::find(literal.begin(), literal.end(), 1) == literal.end());
    CHECK(std::find(literal.begin(), literal.end(), 2) == literal.end());

    // Longest first: <|endoftext|> and <|end|> are both Phi-3 tokens; Phi-3's specials also eat
    // the whitespace after them (llama.cpp's rule for that model).
    const Vocab phi3 = load("phi-3");
    const int32_t user = phi3.find("<|user|>"), end = phi3.find("<|end|>"), eot = phi3.find("<|endoftext|>");
    REQUIRE((user >= 0 && end >= 0 && eot >= 0));
    CHECK(tokenize(phi3, "<|user|>\nHi<|end|><|endoftext|>", false, true) ==
          std::vector<int32_t>{user, phi3.find("\xE2\x96\x81" "Hi"), end, eot});
    CHECK(tokenize(phi3, "<|endoftext|>", false, true) == std::vector<int32_t>{eot});

    const Vocab starcoder = load("starcoder");
    const std::vector<int32_t> fim = tokenize(starcoder, "<fim_prefix>def f():<fim_suffix>", false, true);
    REQUIRE(fim.size() >= 3);
    CHECK(fim.front() == starcoder.find("<fim_prefix>"));
    CHECK(fim.back() == starcoder.find("<fim_suffix>"));

    // User-defined tokens are matched whole even without parse_special, as in llama.cpp and HF.
    const Vocab deepseek = load("deepseek-coder");
    const int32_t user_tok = deepseek.find("<|User|>");
    REQUIRE(user_tok >= 0);
    CHECK(tokenize(deepseek, "<|User|>", false, false) == std::vector<int32_t>{user_tok});
}

TEST_CASE("pieces: control tokens render only when special, byte tokens give their byte") {
    const Vocab spm = load("llama-spm");
    CHECK(token_to_piece(spm, 1, false) == "");
    CHECK(token_to_piece(spm, 1, true) == "<s>");
    CHECK(token_to_piece(spm, 15043, false) == " Hello");
    CHECK(token_to_piece(spm, spm.find("<0x0A>"), false) == "\n");
    CHECK_THROWS_AS(token_to_piece(spm, spm.n_vocab(), false), Error);
    CHECK_THROWS_AS(token_to_piece(spm, -1, false), Error);

    const Vocab gpt2 = load("gpt-2");
    CHECK(token_to_piece(gpt2, gpt2.find("\xC4\xA0" "Hello"), false) == " Hello");  // U+0120 is the space byte
    CHECK(token_to_piece(gpt2, 50256, false) == "");
    CHECK(token_to_piece(gpt2, 50256, true) == "<|endoftext|>");
}

TEST_CASE("end-of-generation ids: eos plus the end-of-turn tokens present") {
    const Vocab spm = load("llama-spm");
    CHECK(spm.is_eog(2));
    CHECK_FALSE(spm.is_eog(1));
    const Vocab phi3 = load("phi-3");
    CHECK(phi3.is_eog(phi3.eos_id));
    CHECK(phi3.is_eog(phi3.find("<|end|>")));
    CHECK(phi3.is_eog(phi3.find("<|endoftext|>")));
    CHECK_FALSE(phi3.is_eog(phi3.find("<|user|>")));
    const Vocab gpt2 = load("gpt-2");
    CHECK(gpt2.eog_ids == std::vector<int32_t>{50256});
    const Vocab deepseek = load("deepseek-coder");
    CHECK(deepseek.is_eog(deepseek.find("<｜end▁of▁sentence｜>")));
}

TEST_CASE("the detokenizer holds back partial UTF-8 until the character completes") {
    const Vocab spm = load("llama-spm");
    const auto byte = [&](int b) { return spm.find(strfmt("<0x%02X>", b)); };
    Detokenizer d(spm);
    // U+1F999 (llama) is F0 9F A6 99 and has no token of its own in this vocabulary.
    CHECK(d.push(spm.find("\xE2\x96\x81" "this")) == " this");
    CHECK(d.push(byte(0xF0)) == "");
    CHECK(d.pending() == 1);
    CHECK(d.push(byte(0x9F)) == "");
    CHECK(d.push(byte(0xA6)) == "");
    CHECK(d.pending() == 3);
    CHECK(d.push(byte(0x99)) == "\xF0\x9F\xA6\x99");
    CHECK(d.pending() == 0);
    // An unfinished character at the end comes out of flush(); a stray continuation byte is not held.
    CHECK(d.push(byte(0xE2)) == "");
    CHECK(d.flush() == "\xE2");
    CHECK(d.push(byte(0x80)) == "\x80");

    // Byte-level BPE splits emoji across tokens too: streamed pieces are each whole UTF-8.
    const Vocab gpt2 = load("gpt-2");
    const std::string text = "🦙 and 😶\u200d🌫️ ok";
    Detokenizer g(gpt2);
    std::string streamed;
    int held = 0;
    for (int32_t id : tokenize(gpt2, text, false, false)) {
        const std::string piece = g.push(id);
        CHECK(utf8_is_valid(piece));
        held += g.pending() > 0;
        streamed += piece;
    }
    streamed += g.flush();
    CHECK(streamed == text);
    CHECK(held > 0);  // the suite would not test anything if no token split a character
}

TEST_CASE("utf8 helpers: completeness and repair") {
    CHECK(utf8_complete_prefix("abc") == 3);
    CHECK(utf8_complete_prefix("a\xC3") == 1);
    CHECK(utf8_complete_prefix("a\xC3\xA9") == 3);
    CHECK(utf8_complete_prefix("\xF0\x9F\xA6") == 0);
    CHECK(utf8_complete_prefix("\x80\x80") == 2);
    CHECK(utf8_sanitize("a\xFF" "b") == "a\xEF\xBF\xBD" "b");
    CHECK(utf8_sanitize("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
    for (int b = 0; b < 256; ++b) {
        size_t len = 0;
        CHECK(bpe_char_to_byte(bpe_byte_to_char(uint8_t(b)), 0, &len) == b);
    }
}

TEST_CASE("byte-level BPE survives invalid UTF-8 input (it becomes U+FFFD, as in llama.cpp)") {
    const Vocab gpt2 = load("gpt-2");
    CHECK(tokenize(gpt2, "a\xFF" "b", false, false) == tokenize(gpt2, "a\xEF\xBF\xBD" "b", false, false));
}

TEST_CASE("every supported pre-tokenizer compiles; unknown ones are one clear error") {
    std::istringstream names(Pretokenizer::supported_names());
    int n = 0;
    for (std::string name; std::getline(names, name, ',');) {
        if (name[0] == ' ') name.erase(0, 1);
        CHECK_NOTHROW(Pretokenizer{name});
        ++n;
    }
    CHECK(n >= 10);
    for (const char* required : {"default", "gpt2", "llama3", "llama-bpe", "qwen2", "smollm", "deepseek-llm"}) {
        CHECK_NOTHROW(Pretokenizer{required});
    }
    CHECK_THROWS_WITH_AS(Pretokenizer{"no-such-pre"}, doctest::Contains("supported: default, gpt-2"), Error);
}

TEST_CASE("pre-tokenizer splits: lookaheads, digit groups and gaps") {
    using W = std::vector<std::string>;
    // \s+(?!\S) leaves the last space to the next word; the lone tab is a gap of its own.
    CHECK(Pretokenizer("gpt2").split("a   b\tc") == W{"a", "  ", " b", "\t", "c"});
    CHECK(Pretokenizer("gpt2").split("it's") == W{"it", "'s"});
    CHECK(Pretokenizer("llama3").split("IT'S 12345") == W{"IT", "'S", " ", "123", "45"});
    CHECK(Pretokenizer("qwen2").split("a 12\n\nb") == W{"a", " ", "1", "2", "\n\n", "b"});
    CHECK(Pretokenizer("starcoder").split("x 42") == W{"x", " ", "4", "2"});
    // DeepSeek LLM's letter class written by code point: U+1F7D and U+2126 (which NFC would turn
    // into U+03CE and U+03A9) are letters; CJK and digits split off.
    CHECK(Pretokenizer("deepseek-llm").split("\u1F7D\u2126 \u4E16\u754C 123") ==
          W{"\u1F7D\u2126", " ", "\u4E16\u754C", " ", "123"});
    // Every regex splits every piece: its ASCII class [!-/:-~] takes letters off a word's start.
    CHECK(Pretokenizer("deepseek-llm").split("x\u1F7D") == W{"x", "\u1F7D"});
}

TEST_CASE("SPM on a tiny vocabulary: merges by score, byte fallback for unknown characters") {
    TempVocab tmp(tiny_spm());
    const GGUFFile file = GGUFFile::open(tmp.path);
    const Vocab v = load_vocab(file);
    const int32_t ab_word = v.find("\xE2\x96\x81" "ab");
    CHECK(tokenize(v, "ab", false, false) == std::vector<int32_t>{ab_word});
    // 'c' has no token: its byte 0x63 comes out as <0x63> (id 3 + 0x63).
    CHECK(tokenize(v, "abc", true, false) == std::vector<int32_t>{1, ab_word, 3 + 0x63});
    CHECK(detokenize(v, tokenize(v, "ab c", false, false)) == "ab c");
}

TEST_CASE("malformed vocabularies are one clear error") {
    {
        GGUFWriter w = tiny_spm();
        w.set("tokenizer.ggml.scores", GGUFMetaValue::array_f32({0.0f, 1.0f}));
        check_load_error(w, "tokenizer.ggml.scores has 2 entries for 264 tokens");
    }
    {
        GGUFWriter w = tiny_spm();
        w.set("tokenizer.ggml.token_type", GGUFMetaValue::array_i32({1, 1, 1}));
        check_load_error(w, "tokenizer.ggml.token_type has 3 entries");
    }
    {
        GGUFWriter w = tiny_spm();
        w.set_u32("tokenizer.ggml.bos_token_id", 99999);
        check_load_error(w, "tokenizer.ggml.bos_token_id = 99999 is out of range");
    }
    {
        GGUFWriter w = tiny_spm();
        w.set_str("tokenizer.ggml.model", "bert");
        check_load_error(w, "tokenizer model 'bert' (WordPiece) is not supported");
    }
    {
        GGUFWriter w = tiny_spm();
        w.set_str("tokenizer.ggml.model", "gpt2");
        w.set_str("tokenizer.ggml.pre", "klingon");
        check_load_error(w, "pre-tokenizer 'klingon' (tokenizer.ggml.pre) is not supported; supported: default");
    }
    {
        GGUFWriter w = tiny_spm();
        w.set_str("tokenizer.ggml.model", "gpt2");
        check_load_error(w, "tokenizer.ggml.merges is missing");
    }
    {
        GGUFWriter w = tiny_spm();
        w.set_array_str("tokenizer.ggml.tokens", std::vector<std::string>(264, "x"));
        check_load_error(w, "duplicate token 'x'");
    }
    {
        GGUFWriter w;
        w.set_str("general.architecture", "llama");
        check_load_error(w, "no tokenizer.ggml.model");
    }
}
