// `minfer perplexity`: perplexity of a model over a text in non-overlapping chunks, like llama.cpp's
// llama-perplexity; with --kl-base, saves a base run's log-probs or compares a run against them.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "core/common.h"
#include "models/kv_plan.h"
#include "models/model.h"
#include "models/perplexity.h"
#include "tools/args.h"
#include "tools/tools.h"

namespace mf {

namespace {

const std::vector<std::string> kPplModelFlags = {"-m", "-f", "-c", "-b", "-ctk", "-ctv", "--kv-window", "--kv-sinks",
                                                 "-t", "--no-mmap", "--device", "-ngl", "--verbose", "-h"};

struct PplArgs {
    ModelArgs model;
    uint32_t max_chunks = 0;  // --chunks: 0 = all
    std::string kl_base;      // --kl-base
};

uint32_t to_uint(const char* flag, const char* v, uint32_t lo) {
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (!*v || *end || x < long(lo) || x > (1L << 24))
        throw Error(strfmt("%s expects an integer >= %u, got '%s'", flag, lo, v));
    return uint32_t(x);
}

PplArgs parse(int argc, char** argv) {
    PplArgs p;
    std::vector<char*> rest = {argv[0]};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a != "--chunks" && a != "--kl-base") {
            rest.push_back(argv[i]);
            continue;
        }
        if (i + 1 >= argc) throw Error(a + " needs a value");
        const char* v = argv[++i];
        if (a == "--chunks") p.max_chunks = to_uint("--chunks", v, 1);
        else p.kl_base = v;
    }
    p.model = parse_model_args(int(rest.size()), rest.data(), kPplModelFlags);
    return p;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot read text file '" + path + "'");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool file_exists(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f) std::fclose(f);
    return f != nullptr;
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

int tool_perplexity(int argc, char** argv) {
    const PplArgs args = parse(argc, argv);
    const ModelArgs& ma = args.model;
    if (ma.help) {
        std::printf("usage: minfer perplexity -m MODEL -f TEXT [-c 512] [--chunks N] [--kl-base FILE] [options]\n"
                    "Perplexity over non-overlapping chunks of -c tokens, each evaluated from an empty cache; the\n"
                    "second half of each chunk is scored (the first half is context). Prints the running estimate\n"
                    "per chunk on stderr and `PPL = X +/- Y` on stdout.\n"
                    "--kl-base FILE: when FILE does not exist, saves this run's log-probabilities there; when it\n"
                    "does, compares this run with it (KL divergence, same top token, PPL ratio; -f optional).\n"
                    "See docs/PERPLEXITY.md.\n\n"
                    "  --chunks N                   evaluate at most N chunks (default: all)\n"
                    "  --kl-base FILE               save or compare a KL-divergence base\n%s",
                    model_args_help(kPplModelFlags).c_str());
        return 0;
    }
    if (ma.model.empty()) throw Error("no model given (-m FILE)");
    const bool compare = !args.kl_base.empty() && file_exists(args.kl_base);
    if (!compare && ma.prompt_file.empty()) throw Error("no text given (-f FILE)");
    const std::string text = ma.prompt_file.empty() ? "" : read_text(ma.prompt_file);
    std::unique_ptr<KLBaseReader> base;
    if (compare) {
        base = std::make_unique<KLBaseReader>(args.kl_base);
        if (ma.n_ctx && uint32_t(ma.n_ctx) != base->n_ctx())
            throw Error(strfmt("the KL base '%s' was made with -c %u, not %d", args.kl_base.c_str(), base->n_ctx(), ma.n_ctx));
    }
    const uint32_t n_ctx = base ? base->n_ctx() : ma.n_ctx ? uint32_t(ma.n_ctx) : 512;
    ModelArgs session_args = ma;
    session_args.n_ctx = int(n_ctx);
    const KVPlan plan = kv_plan_for(session_args);  // a bad -ctk fails here, before the weights load
    if (ma.verbose) std::fputs(describe_kv_plan(plan).c_str(), stderr);

    const double t_load = now_s();
    auto backend = make_backend(ma);
    auto model = load_model(ma.model, *backend);
    if (ma.verbose)
        std::fprintf(stderr, "minfer perplexity: %s on %s, loaded in %.2f s\n", ma.model.c_str(), backend->name(),
                     now_s() - t_load);
    if (model->hp.n_ctx_train && n_ctx > model->hp.n_ctx_train)
        std::fprintf(stderr, "minfer perplexity: note: -c %u exceeds the model's context_length %u\n", n_ctx,
                     model->hp.n_ctx_train);

    std::vector<std::vector<int32_t>> chunks;
    if (!text.empty() || !base) chunks = text_chunks(model->vocab, text, n_ctx, args.max_chunks);
    else chunks = base->chunks();
    if (base) {
        if (chunks.size() > base->chunks().size()) chunks.resize(base->chunks().size());
        if (args.max_chunks && chunks.size() > args.max_chunks) chunks.resize(args.max_chunks);
    }
    std::unique_ptr<KLBaseWriter> save;
    if (!args.kl_base.empty() && !compare) save = std::make_unique<KLBaseWriter>(args.kl_base, model->hp.n_vocab, chunks);

    Session session(*model, session_params(session_args));
    std::fprintf(stderr, "minfer perplexity: %zu chunks of %u tokens, %u scored per chunk, on %s\n", chunks.size(),
                 n_ctx, scored_per_chunk(n_ctx), backend->name());
    const double t0 = now_s();
    const PerplexityResult res = run_perplexity(session, chunks, save.get(), base.get(), [&](const PerplexityResult& r) {
        if (r.n_done == 1) {
            const double per_chunk = now_s() - t0;
            std::fprintf(stderr, "minfer perplexity: %.2f s per chunk, ETA %.1f s\n", per_chunk,
                         per_chunk * double(chunks.size() - 1));
        }
        std::fprintf(stderr, "[%u]%.4f,", r.n_done, r.nll.ppl());
        std::fflush(stderr);
    });
    const double elapsed = now_s() - t0;
    std::fprintf(stderr, "\nminfer perplexity: %u chunks in %.2f s (%.1f tokens/s)\n", res.n_done, elapsed,
                 double(res.n_done) * n_ctx / std::max(elapsed, 1e-9));
    if (save) {
        const uint64_t bytes = save->finish();
        std::fprintf(stderr, "minfer perplexity: saved the KL base (%llu tokens, %.1f MiB) to %s\n",
                     (unsigned long long)res.nll.count, double(bytes) / 1048576.0, args.kl_base.c_str());
    }

    std::printf("PPL = %.4f +/- %.5f\n", res.nll.ppl(), res.nll.ppl_err());
    if (base) {
        const KLStats& kl = res.kl;
        std::printf("base PPL = %.4f +/- %.5f\n", kl.base.ppl(), kl.base.ppl_err());
        std::printf("PPL ratio = %.5f +/- %.5f\n", kl.ppl_ratio(), kl.ppl_ratio_err());
        std::printf("KL divergence = %.6f +/- %.6f\n", kl.mean_kl(), kl.kl_err());
        std::printf("same top token = %.3f%% +/- %.3f%%\n", 100.0 * kl.same_top(), 100.0 * kl.same_top_err());
    }
    return 0;
}

}  // namespace mf
