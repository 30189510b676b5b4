// minfer perplexity on a tiny random llama (CPU): chunking as llama.cpp does it, PPL against a mean NLL
// computed here in double, and the KL base file against itself and against another model.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "model_fixture.h"
#include "models/model.h"
#include "models/perplexity.h"
#include "models/session.h"
#include "models/tokenizer.h"

using namespace mf;

namespace {

// KL(base || run) read from the base file differs from the exact one by at most the uint16 rounding
// of each base log-prob: half a step of 16/65534 nats, 1.23e-4, weighted by probabilities summing
// to at most 1.
constexpr double kQuantTol = 1.3e-4;

struct Tiny {
    std::string path;
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Model> model;
    explicit Tiny(const std::string& name) : path(mf_test::temp_path(name)) {
        mf_test::TinyLlama().write(path);
        backend = make_cpu_backend(2);
        model = load_model(path, *backend);
    }
    ~Tiny() { std::remove(path.c_str()); }
};

// A random run of the fixture vocabulary's letters: about one token per letter.
std::string random_text(size_t n_letters) {
    std::uniform_int_distribution<int> letter(0, 25);
    std::string s;
    for (size_t i = 0; i < n_letters; ++i) s += char('a' + letter(mf_test::rng()));
    return s;
}

// log softmax of one row, in double, written out here as the specification.
std::vector<double> log_softmax(const float* l, size_t n) {
    double mx = l[0];
    for (size_t i = 1; i < n; ++i) mx = std::max(mx, double(l[i]));
    double z = 0;
    for (size_t i = 0; i < n; ++i) z += std::exp(double(l[i]) - mx);
    std::vector<double> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = double(l[i]) - mx - std::log(z);
    return out;
}

SessionParams session_params(uint32_t n_ctx) {
    SessionParams p;
    p.n_ctx = n_ctx;
    return p;
}

size_t argmax(const float* l, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; ++i)
        if (l[i] > l[best]) best = i;
    return best;
}

// Every chunk's logits from a fresh session: [n_ctx * n_vocab] per chunk.
std::vector<std::vector<float>> chunk_logits(const Model& model, const std::vector<std::vector<int32_t>>& chunks) {
    std::vector<std::vector<float>> out;
    for (const auto& c : chunks) {
        Session s(model, session_params(uint32_t(c.size())));
        out.push_back(s.prefill_all(c));
    }
    return out;
}

}  // namespace

TEST_CASE("chunks are non-overlapping n_ctx slices of the text's tokens, BOS first when the vocabulary adds it") {
    Tiny tiny("ppl_chunks.gguf");
    const Vocab& vocab = tiny.model->vocab;
    const std::string text = random_text(150);
    const std::vector<int32_t> tokens = tokenize(vocab, text, true, false);
    const uint32_t n_ctx = 32;
    const auto chunks = text_chunks(vocab, text, n_ctx, 0);
    REQUIRE(chunks.size() == tokens.size() / n_ctx);
    for (size_t ic = 0; ic < chunks.size(); ++ic) {
        std::vector<int32_t> expected(tokens.begin() + ic * n_ctx, tokens.begin() + (ic + 1) * n_ctx);
        if (vocab.add_bos) expected[0] = vocab.bos_id;
        CHECK(chunks[ic] == expected);
    }
    CHECK(text_chunks(vocab, text, n_ctx, 2).size() == 2);
    // llama.cpp's bos handling: the chunk's first token is replaced, not shifted.
    const std::vector<int32_t> seq = {5, 6, 7, 8, 9, 10, 11, 12, 13};
    CHECK(make_chunks(seq, 4, 0, 1) == std::vector<std::vector<int32_t>>{{1, 6, 7, 8}, {1, 10, 11, 12}});
    CHECK(make_chunks(seq, 4, 0, TOKEN_NONE)[1] == std::vector<int32_t>{9, 10, 11, 12});
}

TEST_CASE("a text shorter than two chunks is one clear error") {
    Tiny tiny("ppl_short.gguf");
    const std::string text = random_text(40);
    const size_t n_tokens = tokenize(tiny.model->vocab, text, true, false).size();
    REQUIRE(n_tokens < 64);
    const std::string expected = strfmt("the text has %zu tokens; perplexity with -c 32 needs at least 64", n_tokens);
    CHECK_THROWS_WITH_AS(text_chunks(tiny.model->vocab, text, 32, 0), doctest::Contains(expected.c_str()), Error);
    CHECK_THROWS_AS(make_chunks({1, 2, 3, 4, 5, 6}, 2, 0, TOKEN_NONE), Error);  // -c below 4
}

TEST_CASE("PPL is exp of the mean NLL of each chunk's second half; the error is llama.cpp's") {
    Tiny tiny("ppl_nll.gguf");
    const uint32_t n_ctx = 32, n_vocab = tiny.model->hp.n_vocab;
    const auto chunks = text_chunks(tiny.model->vocab, random_text(200), n_ctx, 0);
    REQUIRE(chunks.size() >= 3);

    Session session(*tiny.model, session_params(n_ctx));
    std::vector<uint32_t> progress;
    const PerplexityResult res =
        run_perplexity(session, chunks, nullptr, nullptr, [&](const PerplexityResult& r) { progress.push_back(r.n_done); });
    CHECK(res.n_done == chunks.size());
    CHECK(progress.size() == chunks.size());
    CHECK(progress.back() == chunks.size());

    // The same logits (a fresh session per chunk computes them bit for bit as a reset one does), scored here.
    const auto logits = chunk_logits(*tiny.model, chunks);
    std::vector<double> nlls;
    for (size_t ic = 0; ic < chunks.size(); ++ic)
        for (uint32_t j = n_ctx / 2; j < n_ctx - 1; ++j)
            nlls.push_back(-log_softmax(logits[ic].data() + size_t(j) * n_vocab, n_vocab)[chunks[ic][j + 1]]);
    REQUIRE(res.nll.count == nlls.size());
    CHECK(nlls.size() == chunks.size() * 15);
    double mean = 0;
    for (double x : nlls) mean += x;
    mean /= double(nlls.size());
    double var = 0;
    for (double x : nlls) var += (x - mean) * (x - mean);
    var /= double(nlls.size());
    const double ppl = std::exp(mean), err = ppl * std::sqrt(var / double(nlls.size() - 1));
    // Both sides sum the same doubles (in another order, and the error from E[x^2] - E[x]^2): 1e-9
    // relative is far above double rounding over a few dozen terms and far below any real mistake.
    CHECK(std::fabs(res.nll.ppl() - ppl) <= 1e-9 * ppl);
    CHECK(std::fabs(res.nll.ppl_err() - err) <= 1e-6 * err);
    CHECK(err > 0);
}

TEST_CASE("KL of a run against its own base is 0, with the same top token everywhere and PPL ratio 1") {
    Tiny tiny("ppl_self.gguf");
    const uint32_t n_ctx = 32;
    const auto chunks = text_chunks(tiny.model->vocab, random_text(150), n_ctx, 0);
    const std::string base_path = mf_test::temp_path("ppl_self.klbase");
    Session session(*tiny.model, session_params(n_ctx));

    KLBaseWriter writer(base_path, tiny.model->hp.n_vocab, chunks);
    const PerplexityResult base_run = run_perplexity(session, chunks, &writer, nullptr);
    const uint64_t bytes = writer.finish();
    CHECK(!std::ifstream(base_path + ".tmp"));
    std::ifstream in(base_path, std::ios::binary | std::ios::ate);
    REQUIRE(in);
    CHECK(uint64_t(in.tellg()) == bytes);

    KLBaseReader base(base_path);
    CHECK(base.chunks() == chunks);
    CHECK(base.n_ctx() == n_ctx);
    const PerplexityResult res = run_perplexity(session, chunks, nullptr, &base);
    CHECK(res.kl.count == res.nll.count);
    CHECK(std::fabs(res.kl.mean_kl()) <= kQuantTol);
    CHECK(res.kl.same_top() == 1.0);
    // The base keeps each target's log-prob as f32: relative rounding 6e-8 of NLLs of a few nats.
    CHECK(std::fabs(res.kl.ppl_ratio() - 1.0) <= 1e-6);
    CHECK(std::fabs(res.kl.base.ppl() - base_run.nll.ppl()) <= 1e-6 * base_run.nll.ppl());
    std::remove(base_path.c_str());
}

TEST_CASE("KL, same-top rate and PPL ratio against another model match an exact computation") {
    Tiny a("ppl_kl_a.gguf"), b("ppl_kl_b.gguf");  // same vocabulary, independent random weights
    const uint32_t n_ctx = 32, n_vocab = a.model->hp.n_vocab;
    const auto chunks = text_chunks(a.model->vocab, random_text(150), n_ctx, 0);
    const std::string base_path = mf_test::temp_path("ppl_kl.klbase");
    {
        Session sa(*a.model, session_params(n_ctx));
        KLBaseWriter writer(base_path, n_vocab, chunks);
        run_perplexity(sa, chunks, &writer, nullptr);
        writer.finish();
    }
    KLBaseReader base(base_path);
    Session sb(*b.model, session_params(n_ctx));
    const PerplexityResult res = run_perplexity(sb, chunks, nullptr, &base);

    const auto la = chunk_logits(*a.model, chunks), lb = chunk_logits(*b.model, chunks);
    double kl = 0, dnll = 0, dropped = 0;
    uint64_t n = 0, same = 0;
    for (size_t ic = 0; ic < chunks.size(); ++ic)
        for (uint32_t j = n_ctx / 2; j < n_ctx - 1; ++j, ++n) {
            const float* ra = la[ic].data() + size_t(j) * n_vocab;
            const float* rb = lb[ic].data() + size_t(j) * n_vocab;
            const auto pa = log_softmax(ra, n_vocab), pb = log_softmax(rb, n_vocab);
            const double top = *std::max_element(pa.begin(), pa.end());
            for (uint32_t i = 0; i < n_vocab; ++i) {
                kl += std::exp(pa[i]) * (pa[i] - pb[i]);
                if (pa[i] < top - 16) dropped += std::exp(pa[i]) * std::fabs(pa[i] - pb[i]);
            }
            const int32_t t = chunks[ic][j + 1];
            dnll += pa[t] - pb[t];
            same += argmax(ra, n_vocab) == argmax(rb, n_vocab);
        }
    kl /= double(n), dnll /= double(n), dropped /= double(n);
    MESSAGE("exact KL ", kl, ", from the base file ", res.kl.mean_kl(), ", same top ", res.kl.same_top());
    REQUIRE(kl > 1e-2);  // the two models really differ, so the check below can fail
    CHECK(res.kl.count == n);
    // The base drops log-probs more than 16 nats below the top (their exact share is `dropped`).
    CHECK(std::fabs(res.kl.mean_kl() - kl) <= kQuantTol + dropped);
    CHECK(res.kl.n_same_top == same);
    CHECK(std::fabs(res.kl.ppl_ratio() - std::exp(dnll)) <= 1e-6 * std::exp(dnll));
    CHECK(res.kl.kl_err() > 0);
    std::remove(base_path.c_str());
}

TEST_CASE("a KL base that is not one, is truncated, or was made from other chunks is one clear error") {
    Tiny tiny("ppl_bad.gguf");
    const uint32_t n_ctx = 32;
    const auto chunks = text_chunks(tiny.model->vocab, random_text(150), n_ctx, 0);
    const std::string base_path = mf_test::temp_path("ppl_bad.klbase");
    Session session(*tiny.model, session_params(n_ctx));
    {
        KLBaseWriter writer(base_path, tiny.model->hp.n_vocab, chunks);
        run_perplexity(session, chunks, &writer, nullptr);
        writer.finish();
    }
    std::string bytes;
    {
        std::ifstream in(base_path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    const std::string bad_path = mf_test::temp_path("ppl_bad2.klbase");
    auto write = [&](const std::string& s) { std::ofstream(bad_path, std::ios::binary) << s; };

    write(bytes.substr(0, bytes.size() - 3));
    CHECK_THROWS_WITH_AS(KLBaseReader{bad_path}, doctest::Contains("truncated"), Error);
    write("GGUF" + bytes.substr(4));
    CHECK_THROWS_WITH_AS(KLBaseReader{bad_path}, doctest::Contains("not a minfer KL base"), Error);
    write(bytes.substr(0, 20));
    CHECK_THROWS_WITH_AS(KLBaseReader{bad_path}, doctest::Contains("not a minfer KL base"), Error);
    CHECK_THROWS_WITH_AS(KLBaseReader{bad_path + ".missing"}, doctest::Contains("cannot open"), Error);

    KLBaseReader base(base_path);
    auto other = chunks;
    other[1][5] = (other[1][5] + 1) % int32_t(tiny.model->hp.n_vocab);
    CHECK_THROWS_WITH_AS(run_perplexity(session, other, nullptr, &base), doctest::Contains("chunk 2 differs"), Error);
    const auto shorter = text_chunks(tiny.model->vocab, random_text(150), 16, 0);
    CHECK_THROWS_WITH_AS(run_perplexity(session, shorter, nullptr, &base), doctest::Contains("made with"), Error);
    std::remove(base_path.c_str());
    std::remove(bad_path.c_str());
}
