// The generation loop; see generate.h.
#include "models/generate.h"

#include <chrono>

#include "models/tokenizer.h"

namespace mf {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

std::string generate(Session& session, Sampler& sampler, const std::vector<int32_t>& prompt, int n_predict,
                     const std::function<bool(const std::string&)>& on_text, GenerateStats* stats) {
    GenerateStats st;
    const Vocab& vocab = session.model().vocab;
    const int32_t n_vocab = int32_t(session.model().hp.n_vocab);
    std::string reply;

    auto t0 = std::chrono::steady_clock::now();
    const std::vector<float>* logits = &session.prefill(prompt);
    for (int32_t t : prompt) sampler.accept(t);
    st.n_prompt = int(prompt.size());
    st.prompt_s = seconds_since(t0);

    Detokenizer detok(vocab);
    t0 = std::chrono::steady_clock::now();
    bool keep_going = true;
    while (keep_going && (n_predict < 0 || st.n_gen < n_predict)) {
        const int32_t tok = sampler.sample(logits->data(), n_vocab);
        if (vocab.is_eog(tok)) {
            st.hit_eog = true;
            break;
        }
        sampler.accept(tok);
        ++st.n_gen;
        const std::string piece = detok.push(tok);
        reply += piece;
        if (!piece.empty()) keep_going = on_text(piece);
        if (!keep_going || !session.fits(1)) break;
        logits = &session.decode(tok);
    }
    const std::string rest = detok.flush();
    reply += rest;
    if (!rest.empty()) on_text(rest);
    st.gen_s = seconds_since(t0);
    if (stats) *stats = st;
    return reply;
}

}  // namespace mf
