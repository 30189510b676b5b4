// Perplexity over non-overlapping chunks (llama.cpp's llama-perplexity), and the KL-divergence base
// file: per scored token the base run's log-probabilities, uint16-quantized, to compare runs against.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "models/session.h"
#include "models/vocab.h"

namespace mf {

// Running sums of per-token negative log-likelihoods (nats), in double.
struct NllStats {
    double sum = 0, sum2 = 0;
    uint64_t count = 0;

    void add(double nll) { sum += nll, sum2 += nll * nll, ++count; }
    double mean() const;  // mean NLL
    double ppl() const;   // exp(mean NLL)
    // ppl * the standard error of the mean NLL (first-order propagation through exp, as llama.cpp);
    // 0 with fewer than two tokens.
    double ppl_err() const;
};

// A run compared with a base run, token by token.
struct KLStats {
    double sum_kl = 0, sum_kl2 = 0;      // KL(base || this run) per token, nats
    double sum_dnll = 0, sum_dnll2 = 0;  // NLL(this run) - NLL(base) per token
    uint64_t count = 0;
    uint64_t n_same_top = 0;  // tokens whose most likely next token is the base's
    NllStats base;            // the base run's NLLs of the same tokens

    double mean_kl() const;
    double kl_err() const;  // standard error of mean_kl
    double same_top() const;
    double same_top_err() const;  // binomial standard error
    double ppl_ratio() const;     // PPL(this run) / PPL(base) = exp(mean dnll)
    double ppl_ratio_err() const; // from the standard error of the mean dnll (the runs are correlated)
};

// First position scored in a chunk of n_ctx tokens: the first half is context only (llama.cpp's
// convention); rows first .. n_ctx - 2 predict tokens first + 1 .. n_ctx - 1.
inline uint32_t first_scored(uint32_t n_ctx) { return n_ctx / 2; }
inline uint32_t scored_per_chunk(uint32_t n_ctx) { return n_ctx - 1 - first_scored(n_ctx); }

// tokens -> chunks of exactly n_ctx tokens (the tail that fills no chunk is dropped); when bos is
// not TOKEN_NONE it replaces each chunk's first token, as llama.cpp does. max_chunks 0: all.
// Throws Error when there are fewer than 2 * n_ctx tokens or n_ctx < 4.
std::vector<std::vector<int32_t>> make_chunks(const std::vector<int32_t>& tokens, uint32_t n_ctx, uint32_t max_chunks,
                                              int32_t bos);
// text -> chunks: tokenized as llama-perplexity does (special tokens added as the vocabulary asks,
// special-token text not parsed), BOS per chunk when the vocabulary adds BOS.
std::vector<std::vector<int32_t>> text_chunks(const Vocab& vocab, const std::string& text, uint32_t n_ctx,
                                              uint32_t max_chunks);

// -log softmax(logits)[target] in double; logits: [n_vocab].
double token_nll(const float* logits, size_t n_vocab, int32_t target);

// A KL base file being written (docs/PERPLEXITY.md has the layout). It is written to PATH.tmp and
// renamed to PATH by finish(), so an interrupted run leaves no base behind.
class KLBaseWriter {
public:
    // chunks: the token chunks the base run evaluates, all n_ctx long. Throws Error when the file
    // cannot be created.
    KLBaseWriter(const std::string& path, uint32_t n_vocab, const std::vector<std::vector<int32_t>>& chunks);
    ~KLBaseWriter();
    KLBaseWriter(const KLBaseWriter&) = delete;
    KLBaseWriter& operator=(const KLBaseWriter&) = delete;

    // logits: [n_ctx, n_vocab] of chunk ic (in order), token-major; writes its scored rows.
    void add_chunk(uint32_t ic, const float* logits);
    // Completes the file after the last chunk. Returns its size in bytes.
    uint64_t finish();

private:
    std::string path_, tmp_path_;
    FILE* f_ = nullptr;
    uint32_t n_vocab_, n_ctx_, n_chunks_, next_chunk_ = 0;
    std::vector<std::vector<int32_t>> chunks_;
    std::vector<uint8_t> row_;
};

// A KL base file opened for comparison. Throws Error for a missing, foreign, truncated or
// inconsistent file.
class KLBaseReader {
public:
    explicit KLBaseReader(const std::string& path);
    ~KLBaseReader();
    KLBaseReader(const KLBaseReader&) = delete;
    KLBaseReader& operator=(const KLBaseReader&) = delete;

    uint32_t n_vocab() const { return n_vocab_; }
    uint32_t n_ctx() const { return n_ctx_; }
    const std::vector<std::vector<int32_t>>& chunks() const { return chunks_; }  // [n_chunks][n_ctx]

    // logits: [n_ctx, n_vocab] of this run over chunk ic; adds its scored tokens to kl.
    void compare_chunk(uint32_t ic, const float* logits, KLStats& kl);

private:
    std::string path_;
    FILE* f_ = nullptr;
    uint32_t n_vocab_ = 0, n_ctx_ = 0;
    uint64_t rows_offset_ = 0;
    std::vector<std::vector<int32_t>> chunks_;
    std::vector<uint8_t> rows_;
};

struct PerplexityResult {
    NllStats nll;         // this run's scored tokens
    KLStats kl;           // against the base, when one is compared
    uint32_t n_done = 0;  // chunks evaluated
};

// Evaluates each chunk (all session.n_ctx() or shorter, equal length) in session from position 0
// (the session is reset first) and scores its second half; saves the rows to save and compares
// them with compare when given. on_chunk, when set, runs after each chunk with the totals so far.
PerplexityResult run_perplexity(Session& session, const std::vector<std::vector<int32_t>>& chunks,
                                KLBaseWriter* save, KLBaseReader* compare,
                                const std::function<void(const PerplexityResult&)>& on_chunk = {});

}  // namespace mf
