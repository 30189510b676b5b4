// `minfer run`: one-shot generation from a prompt (-p, -f, or standard input), streamed to stdout.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "core/common.h"
#include "models/generate.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "tools/args.h"
#include "tools/tools.h"

namespace mf {

namespace {
const std::vector<std::string> kRunFlags = {"-m", "-p", "-f", "-n", "-c", "-b", "-ctk", "-ctv", "--kv-window",
                                            "--kv-sinks", "--mla-expanded", "--attn", "-t", "--no-mmap", "--device",
                                            "-ngl", "-s", "--temp", "--top-k", "--top-p", "--min-p",
                                            "--repeat-penalty", "--repeat-last-n", "--verbose", "-h"};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot read prompt file '" + path + "'");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
}  // namespace

int tool_run(int argc, char** argv) {
    const ModelArgs args = parse_model_args(argc, argv, kRunFlags);
    if (args.help) {
        std::printf("usage: minfer run -m MODEL [-p TEXT | -f FILE] [options]\n"
                    "Generates a continuation of the prompt (read from standard input when neither -p nor -f is\n"
                    "given). The text is used as is: no chat template.\n\n%s",
                    model_args_help(kRunFlags).c_str());
        return 0;
    }
    if (args.model.empty()) throw Error("no model given (-m FILE)");
    std::string prompt = args.prompt;
    if (!args.prompt_file.empty()) prompt = read_file(args.prompt_file);
    if (args.prompt.empty() && args.prompt_file.empty()) {
        std::ostringstream ss;
        ss << std::cin.rdbuf();
        prompt = ss.str();
    }
    if (prompt.empty()) throw Error("the prompt is empty");

    const KVPlan plan = kv_plan_for(args);
    if (args.verbose) std::fputs(describe_kv_plan(plan).c_str(), stderr);
    const auto t0 = std::chrono::steady_clock::now();
    auto backend = make_backend(args);
    auto model = load_model(args.model, *backend);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Session session(*model, session_params(args));
    Sampler sampler(args.sampling);
    const std::vector<int32_t> tokens = tokenize(model->vocab, prompt, true, true);
    if (args.verbose)
        std::fprintf(stderr,
                     "minfer: %s on %s, loaded in %.2f s (%.1f MiB of weights %s), %zu prompt tokens, context %u\n",
                     args.model.c_str(), backend->name(), load_s, model->weight_bytes / 1048576.0,
                     weights_place(*model).c_str(), tokens.size(), session.n_ctx());

    GenerateStats st;
    generate(session, sampler, tokens, args.n_predict,
             [](const std::string& piece) {
                 std::fwrite(piece.data(), 1, piece.size(), stdout);
                 std::fflush(stdout);
                 return true;
             },
             &st);
    std::printf("\n");
    std::fflush(stdout);
    if (args.verbose)
        std::fprintf(stderr, "minfer: prompt %d tokens in %.3f s (%.1f tok/s), generation %d tokens in %.3f s (%.1f tok/s)\n",
                     st.n_prompt, st.prompt_s, st.n_prompt / std::max(st.prompt_s, 1e-9), st.n_gen, st.gen_s,
                     st.n_gen / std::max(st.gen_s, 1e-9));
    return 0;
}

}  // namespace mf
