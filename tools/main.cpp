// minfer's entry point: dispatches `minfer <command> ...` to the tool functions in tools.h and turns
// every mf::Error (bad input) into one clear line on stderr and exit code 1.
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "core/backend.h"
#include "core/common.h"
#include "tools/tools.h"

namespace {

struct Command {
    const char* name;
    int (*run)(int argc, char** argv);
    const char* help;
};

const Command kCommands[] = {
    {"chat", mf::tool_chat, "chat with a model"},
    {"run", mf::tool_run, "generate text from a prompt"},
    {"bench", mf::tool_bench, "measure prompt and generation speed"},
    {"info", mf::tool_info, "print a GGUF file's metadata and tensor table"},
    {"tokenize", mf::tool_tokenize, "print the token ids of a text"},
    {"synth", mf::tool_synth, "write a random-weight GGUF in the shape of a real model"},
    {"convert", mf::tool_convert, "convert a Hugging Face checkpoint to GGUF"},
    {"quantize", mf::tool_quantize, "requantize a GGUF model's weights (q8_0, q4_0, ..., q4_k_m)"},
    {"perplexity", mf::tool_perplexity, "perplexity of a model over a text (and KL divergence against a base run)"},
    {"attn-lab", mf::tool_attn_lab, "compare MHA, GQA, MQA and MLA variants of one shape: parameters, KV bytes, speed"},
};

void usage(FILE* out) {
    std::fprintf(out, "usage: minfer <command> [options]\n\ncommands:\n");
    for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.help);
    std::fprintf(out, "\n`minfer <command> --help` describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    mf::register_builtin_backends();
    for (const auto& c : kCommands) {
        if (std::strcmp(argv[1], c.name) != 0) continue;
        try {
            return c.run(argc - 1, argv + 1);
        } catch (const mf::Error& e) {
            std::fprintf(stderr, "minfer %s: error: %s\n", c.name, e.what());
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "minfer %s: error: out of memory\n", c.name);
        }
        return 1;
    }
    std::fprintf(stderr, "minfer: error: unknown command '%s' (try `minfer --help`)\n", argv[1]);
    return 1;
}
