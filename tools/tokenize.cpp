// `minfer tokenize -m MODEL (-p TEXT | -f FILE) [--ids] [--no-bos]`: the token ids of a text under
// a GGUF file's vocabulary (full model or vocab-only), one `id -> 'piece'` line per token or one list.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "core/common.h"
#include "core/gguf.h"
#include "models/tokenizer.h"
#include "models/utf8.h"
#include "models/vocab.h"
#include "tools/tools.h"

namespace mf {

namespace {

const char* kUsage =
    "usage: minfer tokenize -m MODEL (-p TEXT | -f FILE) [--ids] [--no-bos]\n"
    "\n"
    "Tokenizes a text with the vocabulary of a GGUF file (a full model or a vocab-only file) and\n"
    "prints one `id -> 'piece'` line per token. Special tokens written in the text (<|im_end|>,\n"
    "<s>, ...) become single ids; BOS (and EOS) are added when the model's metadata asks for them.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE    the GGUF file whose vocabulary to use\n"
    "  -p, --prompt TEXT   the text to tokenize\n"
    "  -f, --file FILE     read the text to tokenize from FILE\n"
    "  --ids               print only the ids, as one line: [1, 15043, 3186]\n"
    "  --no-bos            do not add the BOS/EOS tokens the model asks for\n"
    "  -h, --help          show this help\n";

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot read '" + path + "': " + std::strerror(errno));
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A piece for the terminal: valid UTF-8 as it is; in a piece holding part of a character, the
// non-ASCII bytes as \xNN escapes.
std::string printable(const std::string& piece) {
    if (utf8_is_valid(piece)) return piece;
    std::string out;
    for (unsigned char c : piece) out += c < 0x80 ? std::string(1, char(c)) : strfmt("\\x%02X", c);
    return out;
}

}  // namespace

int tool_tokenize(int argc, char** argv) {
    std::string model, prompt, prompt_file;
    bool have_prompt = false, ids_only = false, no_bos = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error("option " + arg + " needs a value (see --help)");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (arg == "-m" || arg == "--model") {
            model = value();
        } else if (arg == "-p" || arg == "--prompt") {
            prompt = value();
            have_prompt = true;
        } else if (arg == "-f" || arg == "--file") {
            prompt_file = value();
        } else if (arg == "--ids") {
            ids_only = true;
        } else if (arg == "--no-bos") {
            no_bos = true;
        } else {
            throw Error("unknown option '" + arg + "' (see --help)");
        }
    }
    if (model.empty()) throw Error("missing -m MODEL (see --help)");
    if (have_prompt == !prompt_file.empty()) throw Error("give exactly one of -p TEXT and -f FILE (see --help)");
    if (!prompt_file.empty()) prompt = read_file(prompt_file);

    const GGUFFile file = GGUFFile::open(model);
    const Vocab vocab = load_vocab(file);
    const std::vector<int32_t> ids = tokenize(vocab, prompt, !no_bos, true);

    if (ids_only) {
        std::string line = "[";
        for (size_t i = 0; i < ids.size(); ++i) line += (i ? ", " : "") + std::to_string(ids[i]);
        std::printf("%s]\n", line.c_str());
    } else {
        for (int32_t id : ids) std::printf("%d -> '%s'\n", id, printable(token_to_piece(vocab, id, true)).c_str());
    }
    return 0;
}

}  // namespace mf
