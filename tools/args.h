// Flag parsing shared by the model tools (run, chat, bench): llama.cpp's flag names where one
// exists. A bad flag or value throws Error, which main turns into one line and exit code 1.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "models/sampler.h"
#include "models/session.h"

namespace mf {

struct ModelArgs {
    std::string model;           // -m
    std::string prompt;          // -p
    std::string prompt_file;     // -f
    std::string system_prompt;   // -sys
    std::string chat_template;   // --chat-template NAME
    std::string device = "auto"; // --device auto|cpu|cuda (-ngl N: N > 0 cuda, 0 cpu)
    int n_predict = -1;          // -n: tokens to generate, -1 until end of generation
    int n_ctx = 0;               // -c: 0 = the model's context_length, at most 4096
    int n_batch = 256;           // -b: prompt tokens per step
    KVOverrides kv;              // -ctk, -ctv, --kv-window, --kv-sinks
    AttnImpl attn = AttnImpl::FLASH;  // --attn naive|fused|flash
    int n_threads = 0;           // -t: 0 = every hardware thread
    bool no_mmap = false;        // --no-mmap: the CPU copies the weights (make_cpu_backend)
    bool verbose = false;        // --verbose
    bool help = false;           // -h, --help
    SamplerParams sampling;      // -s --temp --top-k --top-p --min-p --repeat-penalty --repeat-last-n
};

// Parses argv[1..argc) (argv[0] is the command name). Every flag in allowed_flags ("-m", "-p", ...)
// is accepted; others are errors.
ModelArgs parse_model_args(int argc, char** argv, const std::vector<std::string>& allowed_flags);
// The help lines of the given flags, for a tool's --help.
std::string model_args_help(const std::vector<std::string>& flags);

// The session settings the flags give (-c, -b, the KV-cache flags, --attn).
SessionParams session_params(const ModelArgs& args);

// The KV-cache plan the flags give for the model file, resolved from its metadata before any weight
// is loaded (so a bad -ctk fails at once, and --verbose can print it first).
KVPlan kv_plan_for(const ModelArgs& args);

// The backend ModelArgs::device names; "auto" takes the best available one.
std::unique_ptr<Backend> make_backend(const ModelArgs& args);

}  // namespace mf
