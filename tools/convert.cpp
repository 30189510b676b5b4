// `minfer convert HF_DIR -o OUT.gguf`: a Hugging Face checkpoint to GGUF (models/convert.h). Flags,
// the progress line (on a terminal only) and the summary; the conversion itself lives in models/.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/common.h"
#include "models/convert.h"
#include "tools/tools.h"

namespace mf {

namespace {

const char* kUsage =
    "usage: minfer convert HF_DIR -o OUT.gguf [--type TYPE] [--kv-type TYPE] [--kv-window N]\n"
    "                      [--kv-sinks N] [--pre NAME]\n"
    "\n"
    "Converts a Hugging Face checkpoint folder (config.json, *.safetensors, the tokenizer files) to a\n"
    "GGUF file with llama.cpp's architecture, metadata keys and tensor names, so that minfer and\n"
    "llama.cpp read the same file. Architectures: LlamaForCausalLM and MistralForCausalLM (llama),\n"
    "Qwen2ForCausalLM (qwen2), Gemma3ForCausalLM (gemma3), DeepseekV2ForCausalLM (deepseek2).\n"
    "The checkpoint is mapped, never read whole; OUT.gguf appears only when complete.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   the GGUF file to write\n"
    "  --type TYPE         type of the weight matrices: f32, f16 (default), bf16, q8_0, q4_0, q4_k, q6_k;\n"
    "                      norms and biases stay f32, rows a block type cannot hold become f16\n"
    "  --pre NAME          tokenizer.ggml.pre to record when detection is unsure (e.g. llama-bpe, qwen2)\n"
    "  --kv-type TYPE      record minfer.kv.type_k/type_v: the KV cache type to run with (f16, q8_0, ...)\n"
    "  --kv-window N       record minfer.kv.window: attend to the last N positions\n"
    "  --kv-sinks N        record minfer.kv.sinks: positions always kept with the window\n"
    "  -h, --help          show this help\n";

int64_t to_count(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < 0 || x > int64_t(UINT32_MAX))
        throw Error(strfmt("%s expects an integer in 0..%u, got '%s'", flag.c_str(), UINT32_MAX, v.c_str()));
    return x;
}

}  // namespace

int tool_convert(int argc, char** argv) {
    ConvertOptions opts;
    std::string type_name = "f16";
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error("option " + arg + " needs a value (see --help)");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (arg == "-o" || arg == "--output") {
            opts.out_path = value();
        } else if (arg == "--type" || arg == "--outtype") {
            type_name = value();
        } else if (arg == "--pre") {
            opts.pre = value();
        } else if (arg == "--kv-type") {
            opts.kv_type = value();
        } else if (arg == "--kv-window") {
            opts.kv_window = to_count(arg, value());
        } else if (arg == "--kv-sinks") {
            opts.kv_sinks = to_count(arg, value());
        } else if (!arg.empty() && arg[0] == '-') {
            throw Error("unknown option '" + arg + "' (see --help)");
        } else if (opts.hf_dir.empty()) {
            opts.hf_dir = arg;
        } else {
            throw Error("unexpected argument '" + arg + "' (one HF_DIR; see --help)");
        }
    }
    if (opts.hf_dir.empty()) throw Error("missing HF_DIR (see --help)");
    if (opts.out_path.empty()) throw Error("missing -o OUT.gguf (see --help)");
    if (!dtype_from_name(type_name.c_str(), &opts.type))
        throw Error("unknown --type '" + type_name + "' (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)");

    const auto t0 = std::chrono::steady_clock::now();
    if (isatty(STDERR_FILENO)) {
        opts.progress = [t0](size_t i, size_t n, uint64_t bytes) {
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::fprintf(stderr, "\rminfer convert: tensor %zu/%zu, %.0f MB/s ", i, n, s > 0 ? double(bytes) / 1e6 / s : 0.0);
            if (i == n) std::fputc('\n', stderr);
            std::fflush(stderr);
        };
    }
    convert_hf_checkpoint(opts);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    struct stat st;
    const double gib = stat(opts.out_path.c_str(), &st) == 0 ? double(st.st_size) / double(1ull << 30) : 0.0;
    std::printf("wrote %s: %s weights, %.2f GiB, in %.1f s\n", opts.out_path.c_str(), type_name.c_str(), gib, seconds);
    return 0;
}

}  // namespace mf
