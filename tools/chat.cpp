// `minfer chat`: an interactive conversation. Each turn re-renders the conversation with the chat
// template and prefills only what the KV cache does not already hold; replies stream as generated.
#include <chrono>
#include <signal.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "core/common.h"
#include "models/chat_template.h"
#include "models/generate.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "tools/args.h"
#include "tools/tools.h"

namespace mf {

namespace {

const std::vector<std::string> kChatFlags = {"-m", "-sys", "--chat-template", "-n", "-c", "-b", "-ctk", "-ctv",
                                             "--kv-window", "--kv-sinks", "--mla-expanded", "--attn", "-t", "--no-mmap",
                                             "--device", "-ngl", "-s", "--temp", "--top-k", "--top-p", "--min-p",
                                             "--repeat-penalty", "--repeat-last-n", "--verbose", "-h"};

volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    size_t n = 0;
    while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
    return n;
}

}  // namespace

int tool_chat(int argc, char** argv) {
    const ModelArgs args = parse_model_args(argc, argv, kChatFlags);
    if (args.help) {
        std::printf("usage: minfer chat -m MODEL [options]\n"
                    "An interactive chat. Type a message and press Enter. /reset starts over, /exit or Ctrl-D\n"
                    "leaves, Ctrl-C stops the current reply (at the prompt it leaves).\n\n%s",
                    model_args_help(kChatFlags).c_str());
        return 0;
    }
    if (args.model.empty()) throw Error("no model given (-m FILE)");

    const KVPlan plan = kv_plan_for(args);
    if (args.verbose) std::fputs(describe_kv_plan(plan).c_str(), stderr);
    const auto t0 = std::chrono::steady_clock::now();
    auto backend = make_backend(args);
    auto model = load_model(args.model, *backend);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // A gemma3 file without a template (Gemma 3 270M base) still speaks in Gemma's turns, not ChatML.
    const bool gemma_turns = model->chat_template.empty() && model->hp.arch == "gemma3";
    const ChatTemplate tmpl = !args.chat_template.empty() ? chat_template_from_name(args.chat_template)
                              : gemma_turns               ? chat_template_from_name("gemma")
                                                          : chat_template_from_text(model->chat_template);
    Session session(*model, session_params(args));
    Sampler sampler(args.sampling);
    std::fprintf(stderr, "minfer chat: %s (%s, %u layers) on %s; template %s; context %u tokens\n", args.model.c_str(),
                 model->hp.arch.c_str(), model->hp.n_layer, backend->name(), chat_family_name(tmpl.family),
                 session.n_ctx());
    if (args.verbose)
        std::fprintf(stderr, "minfer chat: loaded in %.2f s (%.1f MiB of weights %s, %.1f MiB of KV cache)\n",
                     load_s, model->weight_bytes / 1048576.0, weights_place(*model).c_str(),
                     session.kv_bytes() / 1048576.0);
    std::fprintf(stderr, "Type a message; /reset starts over, /exit or Ctrl-D leaves, Ctrl-C stops a reply.\n");
    // No SA_RESTART: Ctrl-C at the prompt interrupts the blocking read, so it leaves at once.
    struct sigaction sa = {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);

    std::vector<ChatMessage> messages;
    if (!args.system_prompt.empty()) messages.push_back({"system", args.system_prompt});
    std::string line;
    while (true) {
        g_interrupted = 0;
        std::fprintf(stdout, "\n> ");
        std::fflush(stdout);
        if (!std::getline(std::cin, line) || g_interrupted) break;
        if (line == "/exit" || line == "/quit") break;
        if (line == "/reset") {
            messages.resize(args.system_prompt.empty() ? 0 : 1);
            session.reset();
            sampler.reset();
            std::fprintf(stdout, "(conversation reset)\n");
            continue;
        }
        if (line.empty()) continue;

        messages.push_back({"user", line});
        std::vector<int32_t> all = tokenize(model->vocab, render_chat(tmpl, messages, true), true, true);
        if (!session.kv_plan().unbounded()) {
            // Past -c, drop the oldest turns (never the system prompt or the new message) until the
            // conversation takes at most 3/4 of the context, leaving the reply room; the cache is
            // then re-prefilled from the first changed token.
            const size_t first = args.system_prompt.empty() ? 0 : 1;
            size_t dropped = 0;
            while (all.size() >= session.n_ctx() * 3 / 4 && messages.size() > first + 1) {
                messages.erase(messages.begin() + long(first));
                ++dropped;
                all = tokenize(model->vocab, render_chat(tmpl, messages, true), true, true);
            }
            if (dropped)
                std::fprintf(stdout, "(the conversation reached the context of %u tokens: dropped the oldest %zu "
                                     "message%s)\n", session.n_ctx(), dropped, dropped == 1 ? "" : "s");
            if (all.size() >= session.n_ctx()) {
                messages.pop_back();
                std::fprintf(stdout, "(this message alone needs %zu of the context's %u tokens; shorten it or raise "
                                     "-c)\n", all.size(), session.n_ctx());
                continue;
            }
        }
        // Keep the cached prefix the new rendering shares; prefill only the rest.
        size_t keep = common_prefix(session.tokens(), all);
        if (keep == all.size()) --keep;  // at least one token must be evaluated for fresh logits
        session.truncate(uint32_t(keep));
        const std::vector<int32_t> fresh(all.begin() + long(keep), all.end());

        GenerateStats st;
        const std::string reply = generate(session, sampler, fresh, args.n_predict,
                                           [](const std::string& piece) {
                                               std::fwrite(piece.data(), 1, piece.size(), stdout);
                                               std::fflush(stdout);
                                               return !g_interrupted;
                                           },
                                           &st);
        std::fprintf(stdout, "\n");
        std::fflush(stdout);
        messages.push_back({"assistant", reply});
        if (g_interrupted) std::fprintf(stdout, "(stopped)\n");
        if (!st.hit_eog && !session.fits(1))
            std::fprintf(stdout, "(the reply filled the context of %u tokens; the next message drops the oldest "
                                 "turns)\n", session.n_ctx());
        if (args.verbose)
            std::fprintf(stderr, "[prompt %d tok, %.1f tok/s | generation %d tok, %.1f tok/s | context %u/%u]\n",
                         st.n_prompt, st.n_prompt / std::max(st.prompt_s, 1e-9), st.n_gen,
                         st.n_gen / std::max(st.gen_s, 1e-9), session.n_past(), session.n_ctx());
    }
    std::fprintf(stdout, "\n");
    return 0;
}

}  // namespace mf
