// convert_hf_tokenizer: tiny HF tokenizers (tests/fixtures/tokenizers, made by
// tools/fixtures/make_tokenizer_fixtures.py) converted to GGUF give Hugging Face's ids in minfer.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/common.h"
#include "core/gguf.h"
#include "models/convert.h"
#include "models/tokenizer.h"
#include "models/vocab.h"
#include "test_util.h"

using namespace mf;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* const kFixtures[] = {"gpt2", "llama3", "qwen2", "smollm", "llama-spm"};

std::string fixture_dir(const std::string& name) { return mf_test::source_path("tests/fixtures/tokenizers/" + name); }

json read_json(const std::string& path) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in, "cannot read " << path);
    return json::parse(in);
}

void write_json(const std::string& path, const json& j) {
    std::ofstream out(path);
    out << j.dump(1);
}

// A scratch directory removed with everything in it.
struct TempDir {
    fs::path path;
    explicit TempDir(const std::string& tag) {
        path = fs::temp_directory_path() /
               ("minfer_convert_tok_" + tag + "_" + std::to_string(mf_test::seed()) + "_" + std::to_string(::getpid()));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

// A copy of fixture name in a scratch directory, to edit.
void copy_fixture(const std::string& name, const fs::path& to) {
    for (const auto& e : fs::directory_iterator(fixture_dir(name))) fs::copy_file(e.path(), to / e.path().filename());
}

// The same, replacing files already there.
void copy_fixture_over(const std::string& name, const fs::path& to) {
    for (const auto& e : fs::directory_iterator(fixture_dir(name))) {
        fs::copy_file(e.path(), to / e.path().filename(), fs::copy_options::overwrite_existing);
    }
}

// Converts dir's tokenizer into a vocab-only GGUF at out and opens it.
GGUFFile convert(const std::string& dir, const std::string& out, const std::string& pre = "") {
    GGUFWriter w;
    convert_hf_tokenizer(dir, pre, w);
    w.write(out);
    return GGUFFile::open(out);
}

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string join(const std::vector<int32_t>& ids) {
    std::string s = "[";
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
    return s + "]";
}

}  // namespace

TEST_CASE("converted tokenizers give Hugging Face's ids for every test string") {
    TempDir tmp("ids");
    for (const char* name : kFixtures) {
        const std::string fixture = name;
        CAPTURE(fixture);
        const json expect = read_json(fixture_dir(name) + "/cases.json");
        const GGUFFile f = convert(fixture_dir(name), (tmp.path / (std::string(name) + ".gguf")).string());
        if (!expect["pre"].is_null()) CHECK(f.get_str("tokenizer.ggml.pre") == expect["pre"].get<std::string>());
        const Vocab vocab = load_vocab(f);
        REQUIRE(expect["cases"].size() >= 19);
        for (const json& c : expect["cases"]) {
            const std::string text = c["text"].get<std::string>();
            const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
            const std::vector<int32_t> got = tokenize(vocab, text, /*add_special=*/false, /*parse_special=*/true);
            CAPTURE(text);
            CHECK_MESSAGE(got == want, "minfer " << join(got) << " vs HF " << join(want));
        }
    }
}

TEST_CASE("the test strings tell the pre-tokenizers apart: a wrong --pre changes some ids") {
    TempDir tmp("wrong");
    const std::pair<const char*, const char*> wrong[] = {
        {"gpt2", "starcoder"}, {"llama3", "qwen2"}, {"qwen2", "gpt-2"}, {"smollm", "llama-bpe"}};
    for (const auto& [name, pre] : wrong) {
        const std::string fixture = name, wrong_pre = pre;
        CAPTURE(fixture);
        CAPTURE(wrong_pre);
        const json expect = read_json(fixture_dir(name) + "/cases.json");
        const Vocab vocab = load_vocab(convert(fixture_dir(name), (tmp.path / "out.gguf").string(), pre));
        int n_differ = 0;
        for (const json& c : expect["cases"]) {
            n_differ += tokenize(vocab, c["text"].get<std::string>(), false, true) != c["ids"].get<std::vector<int32_t>>();
        }
        CHECK(n_differ > 0);
    }
}

TEST_CASE("BPE: added tokens, gaps, special ids from the config files, and end-of-generation ids") {
    TempDir tmp("bpe");
    const json tok = read_json(fixture_dir("llama3") + "/tokenizer.json");
    const GGUFFile f = convert(fixture_dir("llama3"), (tmp.path / "llama3.gguf").string());
    const Vocab v = load_vocab(f);
    CHECK(f.get_str("tokenizer.ggml.model") == "gpt2");
    CHECK(v.merges.size() == tok["model"]["merges"].size());
    // config.json's vocab_size is 4 past the last added token: those ids are padded.
    const int32_t n_tok = int32_t(tok["model"]["vocab"].size() + tok["added_tokens"].size());
    REQUIRE(v.n_vocab() == n_tok + 4);
    for (int32_t id = n_tok; id < v.n_vocab(); ++id) {
        CHECK(v.tokens[size_t(id)] == "[PAD" + std::to_string(id) + "]");
        CHECK(v.token_types[size_t(id)] == TokenType::UNUSED);
    }
    CHECK(v.token_types[0] == TokenType::NORMAL);
    CHECK(v.token_types[size_t(v.find("<|eot_id|>"))] == TokenType::CONTROL);
    CHECK(v.token_types[size_t(v.find("<tool_call>"))] == TokenType::USER_DEFINED);
    CHECK(v.bos_id == v.find("<|begin_of_text|>"));
    CHECK(v.eos_id == v.find("<|eot_id|>"));  // tokenizer_config.json's eos_token
    CHECK(v.eom_id == v.find("<|eom_id|>"));  // generation_config.json's other eos ids
    CHECK(v.eot_id == v.find("<|end_of_text|>"));
    CHECK(v.is_eog(v.find("<|end_of_text|>")));
    CHECK(v.add_bos);  // from the TemplateProcessing post-processor: the config does not say
    CHECK_FALSE(v.add_eos);
    CHECK(f.get_str("tokenizer.chat_template").find("<|start_header_id|>") != std::string::npos);
    CHECK(tokenize(v, "hi", true, true).front() == v.bos_id);

    const GGUFFile q = convert(fixture_dir("qwen2"), (tmp.path / "qwen2.gguf").string());
    const Vocab qv = load_vocab(q);
    CHECK(qv.bos_id == TOKEN_NONE);
    CHECK(qv.eos_id == qv.find("<|im_end|>"));
    CHECK(qv.pad_id == qv.find("<|endoftext|>"));
    CHECK_FALSE(qv.add_bos);
    CHECK(q.get_str("tokenizer.chat_template").find("<|im_start|>") != std::string::npos);  // the "default" entry
    CHECK(q.get_str("tokenizer.chat_template.tool_use") == "{{ tools }}");

    const GGUFFile s = convert(fixture_dir("smollm"), (tmp.path / "smollm.gguf").string());
    const Vocab sv = load_vocab(s);
    CHECK(sv.eos_id == sv.find("<|im_end|>"));  // an AddedToken dict in tokenizer_config.json
    CHECK(sv.bos_id == sv.find("<|im_start|>"));
    CHECK(sv.unk_id == sv.find("<|endoftext|>"));
}

TEST_CASE("ids no file names are padded, never shifted") {
    TempDir tmp("gap");
    const fs::path dir = tmp.path / "tok";
    fs::create_directories(dir);
    copy_fixture("qwen2", dir);
    json tok = read_json((dir / "tokenizer.json").string());
    const int32_t n_model = int32_t(tok["model"]["vocab"].size());
    for (json& t : tok["added_tokens"]) t["id"] = t["id"].get<int32_t>() + 3;  // reserved ids before them
    write_json((dir / "tokenizer.json").string(), tok);
    const Vocab v = load_vocab(convert(dir.string(), (tmp.path / "out.gguf").string()));
    for (int32_t id = n_model; id < n_model + 3; ++id) {
        CHECK(v.tokens[size_t(id)] == "[PAD" + std::to_string(id) + "]");
        CHECK(v.token_types[size_t(id)] == TokenType::UNUSED);
    }
    CHECK(v.find("<|endoftext|>") == n_model + 3);
    CHECK(v.eos_id == v.find("<|im_end|>"));
    CHECK(v.n_vocab() == n_model + 3 + int32_t(tok["added_tokens"].size()));
}

TEST_CASE("SentencePiece: pieces, scores, types and flags from tokenizer.model") {
    TempDir tmp("spm");
    const GGUFFile f = convert(fixture_dir("llama-spm"), (tmp.path / "spm.gguf").string());
    const Vocab v = load_vocab(f);
    CHECK(v.type == VocabType::SPM);
    CHECK(v.unk_id == 0);
    CHECK(v.bos_id == 1);
    CHECK(v.eos_id == 2);
    CHECK(v.token_types[0] == TokenType::UNKNOWN);
    CHECK(v.token_types[1] == TokenType::CONTROL);
    CHECK(v.token_types[2] == TokenType::CONTROL);
    int n_bytes = 0;
    for (TokenType t : v.token_types) n_bytes += t == TokenType::BYTE;
    CHECK(n_bytes == 256);  // byte_fallback
    CHECK(v.find("<0x41>") != TOKEN_NONE);
    CHECK(v.add_bos);
    CHECK_FALSE(v.add_eos);
    CHECK(v.add_space_prefix);
    // Scores are merge priorities: the first merged piece scores above the last.
    CHECK(v.scores[size_t(3 + 256)] > v.scores[size_t(v.n_vocab() - 1)]);
    CHECK(f.get_str("tokenizer.ggml.pre") == "default");
    CHECK(f.get_str("tokenizer.chat_template").find("[INST]") != std::string::npos);
    const std::vector<int32_t> ids = tokenize(v, "Hello", true, false);
    CHECK(ids.front() == 1);
}

TEST_CASE("SentencePiece: added tokens past the model's pieces are control or user-defined") {
    TempDir tmp("spm_added");
    const fs::path dir = tmp.path / "tok";
    fs::create_directories(dir);
    copy_fixture("llama-spm", dir);
    const int32_t n = load_vocab(convert(dir.string(), (tmp.path / "a.gguf").string())).n_vocab();
    json config = read_json((dir / "tokenizer_config.json").string());
    config["added_tokens_decoder"][std::to_string(n)] = {{"content", "<|im_start|>"}, {"special", true}};
    config["added_tokens_decoder"][std::to_string(n + 2)] = {{"content", "\u2581tool\u2581call"}, {"special", false}};
    write_json((dir / "tokenizer_config.json").string(), config);
    const Vocab v = load_vocab(convert(dir.string(), (tmp.path / "b.gguf").string()));
    REQUIRE(v.n_vocab() == n + 3);
    CHECK(v.tokens[size_t(n)] == "<|im_start|>");
    CHECK(v.token_types[size_t(n)] == TokenType::CONTROL);
    CHECK(v.tokens[size_t(n + 1)] == "[PAD" + std::to_string(n + 1) + "]");
    CHECK(v.tokens[size_t(n + 2)] == " tool call");  // U+2581 stands for a space in the text it matches
    CHECK(v.token_types[size_t(n + 2)] == TokenType::USER_DEFINED);
    CHECK(v.scores[size_t(n)] == -1000.0f);
    const std::vector<int32_t> ids = tokenize(v, "<|im_start|>a tool call", false, true);
    REQUIRE(ids.size() >= 3);
    CHECK(ids.front() == n);
    CHECK(ids.back() == n + 2);
}

TEST_CASE("the pre-tokenizer is detected from its structure; an unknown one is refused unless --pre names it") {
    TempDir tmp("pre");
    const fs::path dir = tmp.path / "tok";
    fs::create_directories(dir);
    copy_fixture("llama3", dir);
    const std::string out = (tmp.path / "out.gguf").string();
    json tok = read_json((dir / "tokenizer.json").string());

    SUBCASE("a Split regex minfer has no splitter for") {
        tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{L}+|\\p{N}+|[^\\p{L}\\p{N}]+";
        write_json((dir / "tokenizer.json").string(), tok);
        const std::string err = error_of([&] { convert(dir.string(), out); });
        CHECK(err.find("tokenizer.json") != std::string::npos);
        CHECK(err.find("splits text like none") != std::string::npos);
        CHECK(err.find("--pre NAME") != std::string::npos);
        CHECK(err.find("llama-bpe") != std::string::npos);  // the valid names are listed
        CHECK(err.find('\n') == std::string::npos);
        CHECK(convert(dir.string(), out, "llama-bpe").get_str("tokenizer.ggml.pre") == "llama-bpe");
    }
    SUBCASE("a pre-tokenizer kind minfer cannot rebuild") {
        tok["pre_tokenizer"] = {{"type", "Whitespace"}};
        write_json((dir / "tokenizer.json").string(), tok);
        const std::string err = error_of([&] { convert(dir.string(), out); });
        CHECK(err.find("'Whitespace'") != std::string::npos);
        CHECK(err.find("--pre NAME") != std::string::npos);
        CHECK(convert(dir.string(), out, "gpt2").get_str("tokenizer.ggml.pre") == "gpt2");
    }
    SUBCASE("the same split without ignore_merges is not taken for llama-bpe") {
        tok["model"]["ignore_merges"] = false;
        write_json((dir / "tokenizer.json").string(), tok);
        const std::string err = error_of([&] { convert(dir.string(), out); });
        CHECK(err.find("splits like 'llama-bpe'") != std::string::npos);
        CHECK(err.find("ignore_merges") != std::string::npos);
    }
    SUBCASE("the same regex spelled differently is still recognised") {
        tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
            "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        write_json((dir / "tokenizer.json").string(), tok);
        CHECK(convert(dir.string(), out).get_str("tokenizer.ggml.pre") == "llama-bpe");
    }
    SUBCASE("an override minfer does not implement is refused, listing the names") {
        const std::string err = error_of([&] { convert(dir.string(), out, "no-such-pre"); });
        CHECK(err.find("'no-such-pre'") != std::string::npos);
        CHECK(err.find("qwen2") != std::string::npos);
    }
}

TEST_CASE("a cascade of Split regexes and Digits (DeepSeek Coder's) is recognised") {
    TempDir tmp("dscoder");
    const fs::path dir = tmp.path / "tok";
    fs::create_directories(dir);
    copy_fixture("qwen2", dir);
    json tok = read_json((dir / "tokenizer.json").string());
    const auto split = [](const std::string& re) {
        return json{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}};
    };
    tok["normalizer"] = nullptr;
    tok["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {split("[\r\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"),
          split("[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+"),
          {{"type", "Digits"}, {"individual_digits", true}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
    write_json((dir / "tokenizer.json").string(), tok);
    CHECK(convert(dir.string(), (tmp.path / "out.gguf").string()).get_str("tokenizer.ggml.pre") == "deepseek-coder");
}

TEST_CASE("clean_up_tokenization_spaces picks between pre-tokenizers that split alike") {
    TempDir tmp("clean");
    const fs::path dir = tmp.path / "tok";
    fs::create_directories(dir);
    copy_fixture("smollm", dir);
    json config = read_json((dir / "tokenizer_config.json").string());
    config["clean_up_tokenization_spaces"] = true;
    write_json((dir / "tokenizer_config.json").string(), config);
    CHECK(convert(dir.string(), (tmp.path / "out.gguf").string()).get_str("tokenizer.ggml.pre") == "starcoder");
}

TEST_CASE("bad tokenizer directories are one clear error") {
    TempDir tmp("bad");
    const std::string out = (tmp.path / "out.gguf").string();
    CHECK(error_of([&] { convert(tmp.path.string(), out); }).find("no tokenizer.json or tokenizer.model") !=
          std::string::npos);
    {
        std::ofstream(tmp.path / "tokenizer.json") << "{ not json";
    }
    CHECK(error_of([&] { convert(tmp.path.string(), out); }).find("tokenizer.json: not valid JSON") !=
          std::string::npos);
    fs::remove(tmp.path / "tokenizer.json");
    {
        std::ofstream(tmp.path / "tokenizer.model") << "not a protobuf";
    }
    CHECK(error_of([&] { convert(tmp.path.string(), out); }).find("not a SentencePiece model") != std::string::npos);
    fs::copy_file(fixture_dir("spm-collapse-ws") + "/tokenizer.model", tmp.path / "tokenizer.model",
                  fs::copy_options::overwrite_existing);
    CHECK(error_of([&] { convert(tmp.path.string(), out); }).find("removes extra whitespace") != std::string::npos);
    fs::remove(tmp.path / "tokenizer.model");
    copy_fixture("qwen2", tmp.path);
    json tok = read_json((tmp.path / "tokenizer.json").string());
    tok["model"]["vocab"] = json::array({1, 2});
    write_json((tmp.path / "tokenizer.json").string(), tok);
    const std::string err = error_of([&] { convert(tmp.path.string(), out); });
    CHECK(err.find("model.vocab is missing or not an object") != std::string::npos);
    tok["model"] = "BPE";
    write_json((tmp.path / "tokenizer.json").string(), tok);
    CHECK(error_of([&] { convert(tmp.path.string(), out); }).find("unexpected structure") != std::string::npos);
    copy_fixture_over("qwen2", tmp.path);
    json config = read_json((tmp.path / "tokenizer_config.json").string());
    config["eos_token"] = "<|missing|>";
    write_json((tmp.path / "tokenizer_config.json").string(), config);
    CHECK(error_of([&] { convert(tmp.path.string(), out); }).find("eos_token '<|missing|>' is not in the vocabulary") !=
          std::string::npos);
}
