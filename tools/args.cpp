// Shared flag parsing and backend choice for the model tools.
#include "tools/args.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"

namespace mf {

namespace {

struct FlagInfo {
    const char* name;
    const char* alias;
    const char* value;  // null: takes no value
    const char* help;
};

const FlagInfo kFlags[] = {
    {"-m", "--model", "FILE", "model file (GGUF)"},
    {"-p", "--prompt", "TEXT", "prompt text"},
    {"-f", "--file", "FILE", "read the prompt from FILE"},
    {"-sys", "--system-prompt", "TEXT", "system prompt for the chat"},
    {"--chat-template", nullptr, "NAME", "chatml, llama3, llama2, gemma, deepseek2, deepseek3, mistral, mistral-v7"},
    {"-n", "--n-predict", "N", "tokens to generate (-1: until the model ends its reply)"},
    {"-c", "--ctx-size", "N", "context size in tokens (0: the model's, at most 4096)"},
    {"-b", "--batch-size", "N", "prompt tokens per step (default 256)"},
    {"-ctk", "--cache-type-k", "TYPE", "KV cache type for K: f16, q8_0, q4_0 (default: the model's, else f16)"},
    {"-ctv", "--cache-type-v", "TYPE", "KV cache type for V: f16, q8_0, q4_0 (default: the model's, else f16)"},
    {"--kv-window", nullptr, "N", "attend to the last N tokens on every layer (0: full; default: the model's)"},
    {"--kv-sinks", nullptr, "N", "with a window, also keep the first N tokens (StreamingLLM)"},
    {"--mla-expanded", nullptr, nullptr, "MLA models (deepseek2): cache per-head K and V, as without MLA, instead of\n"
     "                               one latent row per token (for comparison; many times the memory)"},
    {"--attn", nullptr, "NAME", "attention kernels: flash (default: online softmax), fused (scores kept whole per KV\n"
     "                               head group; CUDA: spans up to its shared memory), naive (mul_mat, soft_max,\n"
     "                               mul_mat: scores materialized). MLA layers take the same choice"},
    {"-t", "--threads", "N", "CPU threads (0: all)"},
    {"--no-mmap", nullptr, nullptr, "CPU: copy the weights into memory instead of reading them where the file is\n"
     "                               mapped (the mapping loads at once and shares the page cache)"},
    {"--device", nullptr, "NAME", "auto, cpu or cuda"},
    {"-ngl", "--n-gpu-layers", "N", "0 runs on the CPU; more offloads the whole model to the GPU"},
    {"-s", "--seed", "N", "sampling seed (default: from the clock)"},
    {"--temp", nullptr, "T", "temperature; 0 is greedy (default 0.8)"},
    {"--top-k", nullptr, "N", "top-k (default 40; 0 off)"},
    {"--top-p", nullptr, "P", "top-p (default 0.95; 1 off)"},
    {"--min-p", nullptr, "P", "min-p (default 0.05; 0 off)"},
    {"--repeat-penalty", nullptr, "X", "repetition penalty (default 1.0, off)"},
    {"--repeat-last-n", nullptr, "N", "window of the repetition penalty (default 64)"},
    {"--verbose", "-v", nullptr, "print load time, speeds and the backend"},
    {"-h", "--help", nullptr, "this help"},
};

const FlagInfo* lookup(const std::string& s) {
    for (const auto& f : kFlags)
        if (s == f.name || (f.alias && s == f.alias)) return &f;
    return nullptr;
}

long long to_int(const char* flag, const std::string& v, long long lo, long long hi) {
    errno = 0;
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < lo || x > hi)
        throw Error(strfmt("%s expects an integer in [%lld, %lld], got '%s'", flag, lo, hi, v.c_str()));
    return x;
}

float to_float(const char* flag, const std::string& v, float lo, float hi) {
    errno = 0;
    char* end = nullptr;
    const float x = std::strtof(v.c_str(), &end);
    if (v.empty() || *end || errno || !(x >= lo && x <= hi))
        throw Error(strfmt("%s expects a number in [%g, %g], got '%s'", flag, double(lo), double(hi), v.c_str()));
    return x;
}

}  // namespace

ModelArgs parse_model_args(int argc, char** argv, const std::vector<std::string>& allowed) {
    ModelArgs a;
    a.sampling.seed = uint64_t(std::time(nullptr));
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const FlagInfo* f = lookup(arg);
        bool ok = false;
        if (f)
            for (const auto& name : allowed) ok = ok || name == f->name;
        if (!ok) throw Error(strfmt("unknown flag '%s' (see --help)", arg.c_str()));
        std::string v;
        if (f->value) {
            if (i + 1 >= argc) throw Error(strfmt("%s needs a value (%s)", f->name, f->value));
            v = argv[++i];
        }
        const std::string n = f->name;
        if (n == "-m") a.model = v;
        else if (n == "-p") a.prompt = v;
        else if (n == "-f") a.prompt_file = v;
        else if (n == "-sys") a.system_prompt = v;
        else if (n == "--chat-template") a.chat_template = v;
        else if (n == "-n") a.n_predict = int(to_int(f->name, v, -1, 1 << 30));
        else if (n == "-c") a.n_ctx = int(to_int(f->name, v, 0, 1 << 24));
        else if (n == "-b") a.n_batch = int(to_int(f->name, v, 1, 1 << 16));
        else if (n == "-ctk") a.kv.type_k = v;
        else if (n == "-ctv") a.kv.type_v = v;
        else if (n == "--kv-window") a.kv.window = to_int(f->name, v, 0, 1 << 24);
        else if (n == "--kv-sinks") a.kv.sinks = to_int(f->name, v, 0, 1 << 20);
        else if (n == "--attn") {
            if (v != "naive" && v != "fused" && v != "flash") throw Error("--attn expects naive, fused or flash, got '" + v + "'");
            a.attn = attn_impl_from_name(v);
        }
        else if (n == "-t") a.n_threads = int(to_int(f->name, v, 0, 1024));
        else if (n == "--device") {
            if (v != "auto" && v != "cpu" && v != "cuda") throw Error("--device expects auto, cpu or cuda, got '" + v + "'");
            a.device = v;
        } else if (n == "-ngl") a.device = to_int(f->name, v, 0, 1 << 20) > 0 ? "cuda" : "cpu";
        else if (n == "-s") a.sampling.seed = uint64_t(to_int(f->name, v, 0, (1LL << 62)));
        else if (n == "--temp") a.sampling.temp = to_float(f->name, v, 0.0f, 100.0f);
        else if (n == "--top-k") a.sampling.top_k = int(to_int(f->name, v, 0, 1 << 30));
        else if (n == "--top-p") a.sampling.top_p = to_float(f->name, v, 0.0f, 1.0f);
        else if (n == "--min-p") a.sampling.min_p = to_float(f->name, v, 0.0f, 1.0f);
        else if (n == "--repeat-penalty") a.sampling.repeat_penalty = to_float(f->name, v, 0.0f, 10.0f);
        else if (n == "--repeat-last-n") a.sampling.repeat_last_n = int(to_int(f->name, v, 0, 1 << 20));
        else if (n == "--verbose") a.verbose = true;
        else if (n == "--mla-expanded") a.kv.mla_expanded = true;
        else if (n == "--no-mmap") a.no_mmap = true;
        else if (n == "-h") a.help = true;
    }
    if (a.sampling.repeat_penalty == 0.0f) throw Error("--repeat-penalty must be positive");
    return a;
}

std::string model_args_help(const std::vector<std::string>& flags) {
    std::string out;
    for (const auto& name : flags) {
        const FlagInfo* f = lookup(name);
        MF_ASSERT(f);
        std::string left = std::string(f->name) + (f->alias ? ", " + std::string(f->alias) : "");
        if (f->value) left += std::string(" ") + f->value;
        out += strfmt("  %-28s %s\n", left.c_str(), f->help);
    }
    return out;
}

SessionParams session_params(const ModelArgs& args) {
    SessionParams p;
    p.n_ctx = uint32_t(args.n_ctx);
    p.n_batch = uint32_t(args.n_batch);
    p.kv = args.kv;
    p.attn = args.attn;
    return p;
}

KVPlan kv_plan_for(const ModelArgs& args) {
    return session_kv_plan(load_hparams(GGUFFile::open(args.model)), session_params(args));
}

std::unique_ptr<Backend> make_backend(const ModelArgs& args) {
    if (args.device == "cpu") return make_cpu_backend(args.n_threads, !args.no_mmap);
    if (args.device == "cuda") return create_backend("cuda");
    for (const auto& e : backend_entries()) {
        std::string why;
        if (e.name != "cpu" && e.available(&why)) return e.create();
    }
    return make_cpu_backend(args.n_threads, !args.no_mmap);
}

}  // namespace mf
