// `minfer convert HF_DIR -o OUT.gguf`: a Hugging Face checkpoint to GGUF (models/convert.h), and
// `minfer convert --attn SPEC IN.gguf OUT.gguf` (models/convert_attn.h). Flags, progress and summary only.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/common.h"
#include "models/convert.h"
#include "models/convert_attn.h"
#include "tools/tools.h"

namespace mf {

namespace {

const char* kUsage =
    "usage: minfer convert HF_DIR -o OUT.gguf [--type TYPE] [--kv-type TYPE] [--kv-window N]\n"
    "                      [--kv-sinks N] [--pre NAME]\n"
    "       minfer convert --attn gqa:K|mqa|mla:R[:D] IN.gguf OUT.gguf [--type TYPE] [--mla-norm linear|rms]\n"
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
    "  -h, --help          show this help\n"
    "\n"
    "Attention conversion (--attn, a llama or qwen2 GGUF in; training-free, expect a quality cost):\n"
    "  gqa:K               n_head_kv = n_head / K: the K/V heads of each group mean-pooled\n"
    "  mqa                 one KV head (the mean of all)\n"
    "  mla:R[:D]           a deepseek2 (MLA) file, llama only: [K_nope; V] factorized by a truncated SVD into a\n"
    "                      latent of rank R; the first D/2 rotary pairs (default n_rot/4 pairs) kept as the\n"
    "                      shared k_pe (the mean over KV heads). Recomputed tensors take --type (default f16),\n"
    "                      the others keep their bytes\n"
    "  --mla-norm MODE     linear (default): the latent runs far below attn_kv_a_norm's eps, so the norm is an\n"
    "                      exact linear scale; rms: unit-RMS latent, exact only when R = n_embd\n"
    "  -t, --threads N     threads (default: all)\n";

int64_t to_count(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < 0 || x > int64_t(UINT32_MAX))
        throw Error(strfmt("%s expects an integer in 0..%u, got '%s'", flag.c_str(), UINT32_MAX, v.c_str()));
    return x;
}

}  // namespace

namespace {

// minfer convert --attn SPEC IN.gguf OUT.gguf [--type T] [--mla-norm M] [-t N]
int convert_attn_tool(int argc, char** argv) {
    AttnConvertOptions opts;
    std::string type_name = "f16", spec;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error("option " + arg + " needs a value (see --help)");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (arg == "--attn") {
            spec = value();
        } else if (arg == "--type" || arg == "--outtype") {
            type_name = value();
        } else if (arg == "--mla-norm") {
            const std::string m = value();
            if (m != "linear" && m != "rms") throw Error("--mla-norm expects linear or rms, got '" + m + "'");
            opts.mla_norm = m == "rms" ? MlaNorm::RMS : MlaNorm::LINEAR;
        } else if (arg == "-t" || arg == "--threads") {
            opts.n_threads = int(to_count(arg, value()));
        } else if (arg == "-o" || arg == "--output") {
            paths.push_back(value());
        } else if (!arg.empty() && arg[0] == '-') {
            throw Error("unknown option '" + arg + "' for --attn (see --help)");
        } else {
            paths.push_back(arg);
        }
    }
    if (paths.size() != 2) throw Error("--attn needs IN.gguf and OUT.gguf (see --help)");
    opts.in_path = paths[0];
    opts.out_path = paths[1];
    opts.spec = parse_attn_spec(spec);
    if (!dtype_from_name(type_name.c_str(), &opts.type))
        throw Error("unknown --type '" + type_name + "' (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)");
    const auto t0 = std::chrono::steady_clock::now();
    const AttnConvertSummary s = convert_attention(opts);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %s: %s -> %s, KV heads %u -> %u (of %u query heads), cached values per token and layer "
                "%llu -> %llu, in %.1f s\n", opts.out_path.c_str(), s.arch_in.c_str(), s.arch_out.c_str(),
                s.n_head_kv_in, s.n_head_kv_out, s.n_head, (unsigned long long)s.kv_values_in,
                (unsigned long long)s.kv_values_out, seconds);
    if (opts.spec.kind == AttnSpec::Kind::MLA)
        std::printf("mla: mean over layers of ||A - A_R|| / ||A|| for A = [K_nope; V]: %.4f; of the K rope rows vs "
                    "their mean over KV heads (the shared k_pe): %.4f\n", s.svd_rel_error, s.k_pe_rel_error);
    return 0;
}

}  // namespace

int tool_convert(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "--attn") return convert_attn_tool(argc, argv);
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
