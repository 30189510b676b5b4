// `minfer quantize [-t N] IN.gguf OUT.gguf TYPE`: a GGUF model requantized to TYPE with llama.cpp's
// mix rules (models/quantize.h). Flags, progress and the size summary only.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/common.h"
#include "models/quantize.h"
#include "tools/tools.h"

namespace mf {

namespace {

const char* kUsage =
    "usage: minfer quantize [-t N] IN.gguf OUT.gguf TYPE\n"
    "\n"
    "Writes OUT.gguf: IN.gguf's metadata and tensors with the weight matrices quantized to TYPE.\n"
    "IN may hold f32, f16, bf16 or already quantized tensors (each row is dequantized first; a\n"
    "warning says when a quantized tensor is quantized again). Norm weights, biases and other\n"
    "vectors are copied as they are. Like llama.cpp, output.weight gets q6_k (q8_0 stays q8_0), and\n"
    "a row length that a type's blocks do not divide falls back (q4_k -> q5_0, q5_k -> q5_1,\n"
    "q6_k -> q8_0). The _m mixes give attn_v and ffn_down q6_k on every third layer and the first\n"
    "and last eighth; q4_k_s gives q5_k to the first four attn_v and the first eighth of ffn_down.\n"
    "OUT is written beside itself (OUT.partial-XXXXXX) and renamed when complete. See docs/QUANTIZE.md.\n"
    "\n"
    "types: %s\n"
    "\n"
    "options:\n"
    "  -t, --threads N   threads that quantize (default: every hardware thread)\n"
    "  -h, --help        show this help\n";

std::string joined(const std::vector<std::string>& names) {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
}

int to_threads(const std::string& v) {
    char* end = nullptr;
    errno = 0;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < 1 || x > 1024)
        throw Error("-t expects an integer in 1..1024, got '" + v + "'");
    return int(x);
}

double mib(uint64_t bytes) { return double(bytes) / double(1 << 20); }

}  // namespace

int tool_quantize(int argc, char** argv) {
    QuantizeOptions opts;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            std::printf(kUsage, joined(quant_scheme_names()).c_str());
            return 0;
        } else if (arg == "-t" || arg == "--threads") {
            if (i + 1 >= argc) throw Error("option " + arg + " needs a value (see --help)");
            opts.n_threads = to_threads(argv[++i]);
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw Error("unknown option '" + arg + "' (see --help)");
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.size() != 3)
        throw Error(strfmt("expected IN.gguf OUT.gguf TYPE, got %zu arguments (see --help)", positional.size()));
    opts.in_path = positional[0];
    opts.out_path = positional[1];
    opts.type = positional[2];
    quant_scheme_from_name(opts.type);  // a bad TYPE is refused before the input is read

    opts.on_notice = [](const std::string& notice) {
        std::fprintf(stderr, "minfer quantize: warning: %s\n", notice.c_str());
    };
    if (isatty(STDERR_FILENO)) {
        opts.on_tensor = [](size_t i, size_t n, const TensorPlan& p) {
            std::fprintf(stderr, "\r\033[K[%zu/%zu] %s %s -> %s%s", i, n, p.name.c_str(), dtype_name(p.from),
                         dtype_name(p.to), p.fallback ? " (fallback)" : "");
            if (i == n) std::fputc('\n', stderr);
            std::fflush(stderr);
        };
    }
    const auto t0 = std::chrono::steady_clock::now();
    const QuantizeSummary s = quantize_model(opts);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double n = s.n_elements ? double(s.n_elements) : 1.0;
    std::printf("wrote %s (%s) in %.1f s\n", opts.out_path.c_str(), opts.type.c_str(), seconds);
    std::printf("  input:  %10.2f MiB  %6.2f bits per weight\n", mib(s.in_bytes), 8.0 * double(s.in_bytes) / n);
    std::printf("  output: %10.2f MiB  %6.2f bits per weight\n", mib(s.out_bytes), 8.0 * double(s.out_bytes) / n);
    std::string counts;
    for (const auto& [type, count] : s.out_type_counts)
        counts += strfmt("%s%s: %zu", counts.empty() ? "" : ", ", type.c_str(), count);
    std::printf("  tensors: %s\n", counts.c_str());
    return 0;
}

}  // namespace mf
