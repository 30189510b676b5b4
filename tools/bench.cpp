// `minfer bench`: prompt-processing (pp) and token-generation (tg) speed, like llama-bench: mean
// and standard deviation over repetitions, and for tg the effective memory bandwidth (bytes read
// per token / time per token) against the device's peak where the backend knows it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "core/common.h"
#include "models/attn_lab.h"
#include "models/model.h"
#include "models/session.h"
#include "tools/args.h"
#include "tools/tools.h"
#ifdef MINFER_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace mf {

namespace {

const std::vector<std::string> kBenchModelFlags = {"-m", "-t", "--no-mmap", "--device", "-ngl", "-ctk", "-ctv",
                                                   "--kv-window", "--kv-sinks", "--mla-expanded", "--attn", "-h"};

struct BenchArgs {
    ModelArgs model;
    int n_prompt = 512;
    int n_gen = 128;
    int reps = 5;
    int depth = 0;
    std::string format = "md";
    bool launch_floor = false;
    bool busy = false;  // --busy: the device's share of each tg token
};

int to_int(const char* flag, const char* v, int lo) {
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > (1 << 24)) throw Error(strfmt("%s expects an integer >= %d, got '%s'", flag, lo, v));
    return int(x);
}

BenchArgs parse(int argc, char** argv) {
    BenchArgs b;
    std::vector<char*> rest = {argv[0]};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--launch-floor" || a == "--busy") {
            (a == "--busy" ? b.busy : b.launch_floor) = true;
            continue;
        }
        const bool ours = a == "-p" || a == "-n" || a == "-r" || a == "--depth" || a == "-o";
        if (!ours) {
            rest.push_back(argv[i]);
            // Flags of ModelArgs that take a value keep it.
            if ((a == "-m" || a == "-t" || a == "--device" || a == "-ngl" || a == "--attn") && i + 1 < argc)
                rest.push_back(argv[++i]);
            continue;
        }
        if (i + 1 >= argc) throw Error(a + " needs a value");
        const char* v = argv[++i];
        if (a == "-p") b.n_prompt = to_int("-p", v, 0);
        else if (a == "-n") b.n_gen = to_int("-n", v, 0);
        else if (a == "-r") b.reps = to_int("-r", v, 1);
        else if (a == "--depth") b.depth = to_int("--depth", v, 0);
        else {
            b.format = v;
            if (b.format != "md" && b.format != "json") throw Error("-o expects md or json, got '" + b.format + "'");
        }
    }
    b.model = parse_model_args(int(rest.size()), rest.data(), kBenchModelFlags);
    return b;
}

struct Stat {
    double mean = 0, sd = 0;
};

Stat stats(const std::vector<double>& xs) {
    Stat s;
    for (double x : xs) s.mean += x;
    s.mean /= double(xs.size());
    for (double x : xs) s.sd += (x - s.mean) * (x - s.mean);
    s.sd = xs.size() > 1 ? std::sqrt(s.sd / double(xs.size() - 1)) : 0.0;
    return s;
}

// --launch-floor: the device's cost of a dependent kernel launch (cuda_launch_floor), as a table.
int launch_floor() {
#ifdef MINFER_HAVE_CUDA
    std::string why;
    if (!cuda_available(&why)) throw Error("--launch-floor needs a CUDA device: " + why);
    std::printf("| kernel | grid | steps joined by | us a step |\n| --- | --- | --- | ---: |\n");
    for (const LaunchFloorRow& r : cuda_launch_floor())
        std::printf("| %s | %u x %u | %s | %.2f |\n", r.kernel.c_str(), r.blocks, r.threads, r.how.c_str(), r.us);
    return 0;
#else
    throw Error("--launch-floor needs a build with the CUDA backend");
#endif
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int tool_bench(int argc, char** argv) {
    const BenchArgs args = parse(argc, argv);
    if (args.model.help) {
        std::printf("usage: minfer bench -m MODEL [-p 512] [-n 128] [-r 5] [--depth D] [-o md|json] [--busy] [options]\n"
                    "       minfer bench --launch-floor   (the GPU's cost of a dependent launch and of a grid barrier)\n"
                    "Measures prompt processing of -p tokens (pp) and generation of -n tokens (tg), both after\n"
                    "--depth tokens of context (as llama-bench's -d): tokens/s as mean ± sd over -r repetitions\n"
                    "(after one warm-up), and for tg\n"
                    "the effective bandwidth (weight + KV bytes read per token / time; of an MoE model only the\n"
                    "experts a token is routed to). The attention backend (--attn) is printed with the results,\n"
                    "and so is the KV cache: the plan's bytes and what the backend's memory in use grew by when\n"
                    "it was allocated (-p 0 -n 0 --depth D allocates a D + 1 position cache and runs nothing).\n"
                    "--busy adds the device's own time a tg token; the rest of it is the host's (the inputs, the\n"
                    "launch, reading the logits back); and the last tg step's shape: its kernels, the most of them\n"
                    "that wait one after another, the graph nodes folded into a neighbour's launch. CUDA only.\n\n%s",
                    model_args_help(kBenchModelFlags).c_str());
        return 0;
    }
    if (args.launch_floor) return launch_floor();
    if (args.model.model.empty()) throw Error("no model given (-m FILE)");
    auto backend = make_backend(args.model);
    auto model = load_model(args.model.model, *backend);
    const uint32_t n_ctx = uint32_t(args.depth + std::max(args.n_prompt, args.n_gen) + 1);
    if (n_ctx > model->hp.n_ctx_train && model->hp.n_ctx_train > 0)
        std::fprintf(stderr, "minfer bench: note: %u positions exceed the model's context_length %u\n", n_ctx,
                     model->hp.n_ctx_train);

    std::mt19937 rng(42);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(model->hp.n_vocab) - 1);
    auto random_tokens = [&](int n) {
        std::vector<int32_t> v(size_t(std::max(n, 1)));
        for (auto& t : v) t = tok(rng);
        return v;
    };

    SessionParams sp{n_ctx, 512};
    sp.kv = args.model.kv;
    sp.attn = args.model.attn;
    // The cache is allocated when the session is made: the device's own count of memory in use,
    // taken around it, is what it really cost (allocator rounding included).
    const size_t mem_before = backend->memory_used();
    Session session(*model, sp);
    const size_t kv_allocated = backend->memory_used() - mem_before;
    std::vector<double> pp, tg, busy;
    if (args.busy && !backend->time_computes(true))
        throw Error(strfmt("--busy needs a backend that times its own work (cuda), not %s", backend->name()));
    // The depth is filled once; each repetition then rewinds to it (a windowed cache whose ring the
    // new tokens overwrote is refilled by truncate itself).
    if (args.depth > 0 && (args.n_prompt > 0 || args.n_gen > 0)) session.prefill(random_tokens(args.depth));
    for (int r = 0; r <= args.reps && args.n_prompt > 0; ++r) {  // repetition 0 warms up
        session.truncate(uint32_t(args.depth));
        const auto prompt = random_tokens(args.n_prompt);
        const double t0 = now_s();
        session.prefill(prompt);
        if (r > 0) pp.push_back(args.n_prompt / (now_s() - t0));
    }
    for (int r = 0; r <= args.reps && args.n_gen > 0; ++r) {
        session.truncate(uint32_t(args.depth));
        const auto gen = random_tokens(args.n_gen);
        const double t0 = now_s(), b0 = args.busy ? backend->computed_seconds() : 0.0;
        for (int32_t t : gen) session.decode(t);
        if (r > 0) tg.push_back(args.n_gen / (now_s() - t0));
        if (r > 0 && args.busy) busy.push_back((backend->computed_seconds() - b0) / args.n_gen);
    }

    const double bpt = decode_bytes_per_token(*model, session.kv_plan(), args.depth + (args.n_gen + 1) / 2.0);
    const double peak = backend->peak_bandwidth();
    const Stat spp = pp.empty() ? Stat{} : stats(pp), stg = tg.empty() ? Stat{} : stats(tg);
    const double bw = stg.mean * bpt;
    if (args.format == "json") {
        std::printf("{\"model\": \"%s\", \"backend\": \"%s\", \"attn\": \"%s\", \"weight_bytes\": %zu, \"reps\": %d, \"depth\": %d,\n"
                    " \"kv_planned_bytes\": %zu, \"kv_allocated_bytes\": %zu,\n"
                    " \"pp\": {\"n\": %d, \"tok_s\": %.3f, \"sd\": %.3f},\n"
                    " \"tg\": {\"n\": %d, \"tok_s\": %.3f, \"sd\": %.3f, \"bytes_per_token\": %.0f, \"gb_s\": %.3f, "
                    "\"peak_gb_s\": %.1f%s}}\n",
                    args.model.model.c_str(), backend->name(), attn_impl_name(sp.attn), model->weight_bytes, args.reps, args.depth,
                    session.kv_bytes(), kv_allocated,
                    args.n_prompt, spp.mean, spp.sd, args.n_gen, stg.mean, stg.sd, bpt, bw / 1e9, peak / 1e9,
                    busy.empty() ? "" : strfmt(", \"busy_us\": %.1f", stats(busy).mean * 1e6).c_str());
        return 0;
    }
    std::printf("KV cache: %.2f MiB planned, %.2f MiB allocated (%s memory in use before and after)\n\n",
                session.kv_bytes() / 1048576.0, kv_allocated / 1048576.0, backend->name());
    std::printf("| model | backend | attn | size | test | t/s | GB/s | of peak |\n");
    std::printf("| --- | --- | --- | ---: | --- | ---: | ---: | ---: |\n");
    const char* attn = attn_impl_name(sp.attn);
    const double mib = model->weight_bytes / 1048576.0;
    if (args.n_prompt > 0)
        std::printf("| %s | %s | %s | %.1f MiB | pp%d%s | %.2f ± %.2f | | |\n", model->hp.arch.c_str(), backend->name(), attn,
                    mib, args.n_prompt, args.depth ? strfmt(" @ d%d", args.depth).c_str() : "", spp.mean, spp.sd);
    if (args.n_gen > 0) {
        const std::string of_peak = peak > 0 ? strfmt("%.1f%%", 100.0 * bw / peak) : "n/a";
        std::printf("| %s | %s | %s | %.1f MiB | tg%d%s | %.2f ± %.2f | %.2f | %s |\n", model->hp.arch.c_str(),
                    backend->name(), attn, mib, args.n_gen, args.depth ? strfmt(" @ d%d", args.depth).c_str() : "",
                    stg.mean, stg.sd, bw / 1e9, of_peak.c_str());
    }
    if (!busy.empty()) {
        const Stat sb = stats(busy);
        const double step = 1.0 / stg.mean;
        std::printf("\ndevice busy in tg: %.1f ± %.1f us of a %.1f us token (%.1f%%); the rest is the host's\n",
                    sb.mean * 1e6, sb.sd * 1e6, step * 1e6, 100.0 * sb.mean / step);
        const std::string report = backend->last_graph_report();
        if (!report.empty()) std::printf("last tg step: %s\n", report.c_str());
    }
    return 0;
}

}  // namespace mf
