// `minfer synth --shape NAME --type TYPE -o FILE.gguf`: a GGUF file with random weights in the
// shape of a real model (models/synth.h), for speed work without a download. Flags and printing only.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/common.h"
#include "models/synth.h"
#include "tools/tools.h"

namespace mf {

namespace {

const char* kUsage =
    "usage: minfer synth --shape NAME --type TYPE -o FILE.gguf [--seed N] [--layers N] [-t N]\n"
    "\n"
    "Writes a GGUF file with seeded random weights in the exact shape of a real model (llama.cpp's\n"
    "metadata keys and tensor names, an SPM vocabulary of the model's size), which minfer loads and\n"
    "runs like the real one: speed measurements need no download. The matrices and the token\n"
    "embedding are TYPE (q8_0 where a K-quant's 256-element blocks do not divide a row), norm\n"
    "weights, biases and expert routers f32. The output is meaningless text.\n"
    "\n"
    "options:\n"
    "  --shape NAME        the model whose shape to copy (below)\n"
    "  --type TYPE         the weights' type: %s\n"
    "  -o, --output FILE   the GGUF file to write (replaced if it exists)\n"
    "  --seed N            seed of the weights (default 1); equal flags give equal files\n"
    "  --layers N          write N layers instead of the shape's own count (quick tests; an MoE\n"
    "                      shape keeps its leading dense layers, the rest have experts)\n"
    "  -t, --threads N     threads that draw and quantize (default: every hardware thread)\n"
    "  -h, --help          show this help\n"
    "\n"
    "shapes:\n"
    "%s";

std::string joined(const std::vector<std::string>& names) {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
}

unsigned long long to_uint(const std::string& flag, const std::string& v, unsigned long long lo,
                           unsigned long long hi) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end || errno || x < lo || x > hi)
        throw Error(strfmt("%s expects an integer in %llu..%llu, got '%s'", flag.c_str(), lo, hi, v.c_str()));
    return x;
}

}  // namespace

int tool_synth(int argc, char** argv) {
    SynthOptions opts;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error("option " + arg + " needs a value (see --help)");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") {
            std::printf(kUsage, joined(synth_type_names()).c_str(), synth_shapes_help().c_str());
            return 0;
        } else if (arg == "--shape") {
            opts.shape = value();
        } else if (arg == "--type") {
            opts.type = value();
        } else if (arg == "-o" || arg == "--output") {
            opts.path = value();
        } else if (arg == "--seed") {
            opts.seed = to_uint(arg, value(), 0, UINT64_MAX);
        } else if (arg == "--layers") {
            opts.n_layer = uint32_t(to_uint(arg, value(), 1, 4096));
        } else if (arg == "-t" || arg == "--threads") {
            opts.n_threads = int(to_uint(arg, value(), 1, 1024));
        } else {
            throw Error("unknown option '" + arg + "' (see --help)");
        }
    }
    if (opts.shape.empty()) throw Error("missing --shape NAME (shapes: " + joined(synth_shape_names()) + ")");
    if (opts.type.empty()) throw Error("missing --type TYPE (types: " + joined(synth_type_names()) + ")");
    if (opts.path.empty()) throw Error("missing -o FILE.gguf (see --help)");

    opts.on_notice = [](const std::string& notice) { std::fprintf(stderr, "minfer synth: %s\n", notice.c_str()); };
    if (isatty(STDERR_FILENO)) {
        opts.on_progress = [](size_t done, size_t total) {
            std::fprintf(stderr, "\rminfer synth: tensor %zu/%zu", done, total);
            if (done == total) std::fputc('\n', stderr);
            std::fflush(stderr);
        };
    }
    const auto t0 = std::chrono::steady_clock::now();
    const SynthSummary s = write_synth_model(opts);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %s: %s %s, %zu tensors, %.3f B parameters, %.2f GiB, in %.1f s\n", opts.path.c_str(),
                opts.shape.c_str(), opts.type.c_str(), s.n_tensors, double(s.n_params) / 1e9,
                double(s.file_bytes) / double(1ull << 30), seconds);
    return 0;
}

}  // namespace mf
