// Perplexity: chunking, per-token NLL in double, and the KL base file (uint16 log-prob rows) with the
// comparison against it. The layout of the file is documented in docs/PERPLEXITY.md.
#include "models/perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/common.h"
#include "models/tokenizer.h"

namespace mf {

namespace {

constexpr char kMagic[8] = {'M', 'F', 'K', 'L', 'B', 'A', 'S', 'E'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 32;     // magic, version, n_vocab, n_ctx, n_chunks, first, row_bytes
constexpr size_t kRowHeaderBytes = 16;  // f32 scale, f32 min_log_prob, f32 target_log_prob, i32 top
// Log-probabilities more than this many nats below the row's maximum are dropped (stored as 0), as
// llama.cpp's KL base does: their probability is below e^-16 of the top token's.
constexpr float kLogProbRange = 16.0f;
constexpr float kLevels = 65534.0f;  // quantized values 1 .. 65535; 0 marks a dropped entry

size_t row_bytes(uint32_t n_vocab) { return kRowHeaderBytes + 2 * size_t(n_vocab); }

// Log-softmax of one row: the maximum, its index and log(sum exp(l - max)), in double.
struct RowStats {
    float max = 0;
    int32_t top = 0;
    double lse = 0;
};

RowStats row_stats(const float* logits, size_t n_vocab) {
    RowStats r;
    r.max = logits[0];
    for (size_t i = 1; i < n_vocab; ++i)
        if (logits[i] > r.max) r.max = logits[i], r.top = int32_t(i);
    double sum = 0;
    for (size_t i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i]) - double(r.max));
    r.lse = std::log(sum);
    return r;
}

// One base row: log p_i = min_log_prob + scale * (q_i - 1) for q_i >= 1 (step <= 16/65534 nats,
// so the rounding error is at most 1.23e-4 nats); q_i = 0 for entries below max - 16.
void quantize_row(const float* logits, uint32_t n_vocab, int32_t target, uint8_t* out) {
    const RowStats r = row_stats(logits, n_vocab);
    float lo = r.max;
    for (uint32_t i = 0; i < n_vocab; ++i) lo = std::min(lo, logits[i]);
    lo = std::max(lo, r.max - kLogProbRange);
    const float scale = (r.max - lo) / kLevels;
    const float min_log_prob = float(double(lo) - double(r.max) - r.lse);
    const float target_log_prob = float(double(logits[target]) - double(r.max) - r.lse);
    std::memcpy(out, &scale, 4);
    std::memcpy(out + 4, &min_log_prob, 4);
    std::memcpy(out + 8, &target_log_prob, 4);
    std::memcpy(out + 12, &r.top, 4);
    uint16_t* q = reinterpret_cast<uint16_t*>(out + kRowHeaderBytes);
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    for (uint32_t i = 0; i < n_vocab; ++i) {
        if (logits[i] < lo) {
            q[i] = 0;
            continue;
        }
        const float level = std::min(std::nearbyint((logits[i] - lo) * inv), kLevels);
        q[i] = uint16_t(1 + int(level));
    }
}

void write_all(FILE* f, const void* data, size_t n, const std::string& path) {
    if (n && std::fwrite(data, 1, n, f) != n) throw Error("cannot write '" + path + "' (disk full?)");
}

void read_all(FILE* f, void* data, size_t n, const std::string& path) {
    if (n && std::fread(data, 1, n, f) != n) throw Error("'" + path + "' is truncated");
}

double sem(double sum, double sum2, uint64_t n) {
    if (n < 2) return 0.0;
    const double mean = sum / double(n);
    const double var = std::max(0.0, sum2 / double(n) - mean * mean);
    return std::sqrt(var / double(n - 1));
}

}  // namespace

double NllStats::mean() const { return count ? sum / double(count) : 0.0; }
double NllStats::ppl() const { return std::exp(mean()); }
double NllStats::ppl_err() const { return ppl() * sem(sum, sum2, count); }

double KLStats::mean_kl() const { return count ? sum_kl / double(count) : 0.0; }
double KLStats::kl_err() const { return sem(sum_kl, sum_kl2, count); }
double KLStats::same_top() const { return count ? double(n_same_top) / double(count) : 0.0; }
double KLStats::same_top_err() const {
    const double p = same_top();
    return count > 1 ? std::sqrt(p * (1 - p) / double(count - 1)) : 0.0;
}
double KLStats::ppl_ratio() const { return count ? std::exp(sum_dnll / double(count)) : 1.0; }
double KLStats::ppl_ratio_err() const { return ppl_ratio() * sem(sum_dnll, sum_dnll2, count); }

std::vector<std::vector<int32_t>> make_chunks(const std::vector<int32_t>& tokens, uint32_t n_ctx, uint32_t max_chunks,
                                              int32_t bos) {
    if (n_ctx < 4) throw Error(strfmt("the context (-c) must be at least 4 tokens, got %u", n_ctx));
    if (tokens.size() < 2 * size_t(n_ctx))
        throw Error(strfmt("the text has %zu tokens; perplexity with -c %u needs at least %zu (two chunks)",
                           tokens.size(), n_ctx, 2 * size_t(n_ctx)));
    size_t n_chunks = tokens.size() / n_ctx;
    if (max_chunks) n_chunks = std::min<size_t>(n_chunks, max_chunks);
    std::vector<std::vector<int32_t>> chunks(n_chunks);
    for (size_t ic = 0; ic < n_chunks; ++ic) {
        chunks[ic].assign(tokens.begin() + ptrdiff_t(ic * n_ctx), tokens.begin() + ptrdiff_t((ic + 1) * n_ctx));
        if (bos != TOKEN_NONE) chunks[ic][0] = bos;
    }
    return chunks;
}

std::vector<std::vector<int32_t>> text_chunks(const Vocab& vocab, const std::string& text, uint32_t n_ctx,
                                              uint32_t max_chunks) {
    const std::vector<int32_t> tokens = tokenize(vocab, text, true, false);
    return make_chunks(tokens, n_ctx, max_chunks, vocab.add_bos ? vocab.bos_id : TOKEN_NONE);
}

double token_nll(const float* logits, size_t n_vocab, int32_t target) {
    MF_ASSERT(target >= 0 && size_t(target) < n_vocab);
    const RowStats r = row_stats(logits, n_vocab);
    return double(r.max) + r.lse - double(logits[target]);
}

// ---- the base file ----------------------------------------------------------------------------

KLBaseWriter::KLBaseWriter(const std::string& path, uint32_t n_vocab, const std::vector<std::vector<int32_t>>& chunks)
    : path_(path), tmp_path_(path + ".tmp"), n_vocab_(n_vocab), n_chunks_(uint32_t(chunks.size())), chunks_(chunks) {
    MF_ASSERT(!chunks.empty() && n_vocab > 0);
    n_ctx_ = uint32_t(chunks[0].size());
    for (const auto& c : chunks) MF_ASSERT(c.size() == n_ctx_);
    f_ = std::fopen(tmp_path_.c_str(), "wb");
    if (!f_) throw Error("cannot create '" + tmp_path_ + "'");
    uint8_t header[kHeaderBytes];
    const uint32_t fields[6] = {kVersion, n_vocab_, n_ctx_, n_chunks_, first_scored(n_ctx_), uint32_t(row_bytes(n_vocab_))};
    std::memcpy(header, kMagic, 8);
    std::memcpy(header + 8, fields, sizeof(fields));
    write_all(f_, header, kHeaderBytes, tmp_path_);
    for (const auto& c : chunks) write_all(f_, c.data(), c.size() * 4, tmp_path_);
    row_.resize(row_bytes(n_vocab_));
}

KLBaseWriter::~KLBaseWriter() {
    if (!f_) return;
    std::fclose(f_);
    std::remove(tmp_path_.c_str());
}

void KLBaseWriter::add_chunk(uint32_t ic, const float* logits) {
    MF_ASSERT(f_ && ic == next_chunk_ && ic < n_chunks_);
    const std::vector<int32_t>& chunk = chunks_[ic];
    for (uint32_t j = first_scored(n_ctx_); j + 1 < n_ctx_; ++j) {
        quantize_row(logits + size_t(j) * n_vocab_, n_vocab_, chunk[j + 1], row_.data());
        write_all(f_, row_.data(), row_.size(), tmp_path_);
    }
    ++next_chunk_;
}

uint64_t KLBaseWriter::finish() {
    MF_ASSERT(f_ && next_chunk_ == n_chunks_);
    const bool ok = std::fflush(f_) == 0;
    std::fclose(f_);
    f_ = nullptr;
    if (!ok || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
        std::remove(tmp_path_.c_str());
        throw Error("cannot write '" + path_ + "'");
    }
    return kHeaderBytes + uint64_t(n_chunks_) * n_ctx_ * 4 + uint64_t(n_chunks_) * scored_per_chunk(n_ctx_) * row_.size();
}

KLBaseReader::KLBaseReader(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "rb");
    if (!f_) throw Error("cannot open KL base '" + path + "'");
    uint8_t header[kHeaderBytes];
    if (std::fread(header, 1, kHeaderBytes, f_) != kHeaderBytes || std::memcmp(header, kMagic, 8) != 0)
        throw Error("'" + path + "' is not a minfer KL base file");
    uint32_t fields[6];
    std::memcpy(fields, header + 8, sizeof(fields));
    const uint32_t version = fields[0], n_chunks = fields[3], first = fields[4], rb = fields[5];
    n_vocab_ = fields[1], n_ctx_ = fields[2];
    if (version != kVersion) throw Error(strfmt("'%s' has KL base version %u; this minfer reads %u", path.c_str(), version, kVersion));
    if (n_vocab_ == 0 || n_vocab_ > (1u << 24) || n_ctx_ < 4 || n_ctx_ > (1u << 24) || n_chunks == 0 ||
        n_chunks > (1u << 24) || first != first_scored(n_ctx_) || rb != row_bytes(n_vocab_))
        throw Error("'" + path + "' has an inconsistent KL base header");
    std::fseek(f_, 0, SEEK_END);
    const uint64_t size = uint64_t(ftello(f_));
    rows_offset_ = kHeaderBytes + uint64_t(n_chunks) * n_ctx_ * 4;
    const uint64_t expected = rows_offset_ + uint64_t(n_chunks) * scored_per_chunk(n_ctx_) * rb;
    if (size != expected)
        throw Error(strfmt("'%s' is %llu bytes; its header says %llu (truncated or not a KL base)", path.c_str(),
                           (unsigned long long)size, (unsigned long long)expected));
    fseeko(f_, off_t(kHeaderBytes), SEEK_SET);
    chunks_.assign(n_chunks, std::vector<int32_t>(n_ctx_));
    for (auto& c : chunks_) {
        read_all(f_, c.data(), c.size() * 4, path);
        for (int32_t t : c)
            if (t < 0 || uint32_t(t) >= n_vocab_) throw Error("'" + path + "' holds a token id outside its vocabulary");
    }
}

KLBaseReader::~KLBaseReader() {
    if (f_) std::fclose(f_);
}

void KLBaseReader::compare_chunk(uint32_t ic, const float* logits, KLStats& kl) {
    MF_ASSERT(ic < chunks_.size());
    const uint32_t first = first_scored(n_ctx_), n_rows = scored_per_chunk(n_ctx_);
    const size_t rb = row_bytes(n_vocab_);
    rows_.resize(rb * n_rows);
    fseeko(f_, off_t(rows_offset_ + uint64_t(ic) * n_rows * rb), SEEK_SET);
    read_all(f_, rows_.data(), rows_.size(), path_);
    const std::vector<int32_t>& chunk = chunks_[ic];
    for (uint32_t r = 0; r < n_rows; ++r) {
        const uint8_t* row = rows_.data() + r * rb;
        float scale, min_log_prob, target_log_prob;
        int32_t base_top;
        std::memcpy(&scale, row, 4);
        std::memcpy(&min_log_prob, row + 4, 4);
        std::memcpy(&target_log_prob, row + 8, 4);
        std::memcpy(&base_top, row + 12, 4);
        const uint16_t* q = reinterpret_cast<const uint16_t*>(row + kRowHeaderBytes);

        const float* l = logits + size_t(first + r) * n_vocab_;
        const RowStats s = row_stats(l, n_vocab_);
        const double log_z = double(s.max) + s.lse;  // log p_i = l_i - log_z
        double kl_row = 0;
        for (uint32_t i = 0; i < n_vocab_; ++i) {
            if (!q[i]) continue;
            const double lp_base = double(min_log_prob) + double(scale) * double(q[i] - 1);
            kl_row += std::exp(lp_base) * (lp_base - (double(l[i]) - log_z));
        }
        const int32_t target = chunk[first + r + 1];
        const double nll = log_z - double(l[target]);
        const double nll_base = -double(target_log_prob);
        kl.sum_kl += kl_row, kl.sum_kl2 += kl_row * kl_row;
        kl.sum_dnll += nll - nll_base, kl.sum_dnll2 += (nll - nll_base) * (nll - nll_base);
        kl.base.add(nll_base);
        kl.n_same_top += s.top == base_top;
        ++kl.count;
    }
}

// ---- the run ----------------------------------------------------------------------------------

PerplexityResult run_perplexity(Session& session, const std::vector<std::vector<int32_t>>& chunks, KLBaseWriter* save,
                                KLBaseReader* compare, const std::function<void(const PerplexityResult&)>& on_chunk) {
    MF_ASSERT(!chunks.empty());
    const uint32_t n_ctx = uint32_t(chunks[0].size());
    const size_t n_vocab = session.model().hp.n_vocab;
    if (n_ctx > session.n_ctx())
        throw Error(strfmt("chunks of %u tokens do not fit the session's context of %u", n_ctx, session.n_ctx()));
    if (compare && (compare->n_vocab() != n_vocab || compare->n_ctx() != n_ctx))
        throw Error(strfmt("the KL base was made with n_vocab %u and -c %u; this run has n_vocab %zu and -c %u",
                           compare->n_vocab(), compare->n_ctx(), n_vocab, n_ctx));
    PerplexityResult res;
    for (uint32_t ic = 0; ic < chunks.size(); ++ic) {
        const std::vector<int32_t>& chunk = chunks[ic];
        MF_ASSERT(chunk.size() == n_ctx);
        if (compare && (ic >= compare->chunks().size() || chunk != compare->chunks()[ic]))
            throw Error(strfmt("chunk %u differs from the KL base's (another text, tokenizer or -c)", ic + 1));
        session.reset();
        const std::vector<float> logits = session.prefill_all(chunk);
        MF_ASSERT(logits.size() == size_t(n_ctx) * n_vocab);
        for (uint32_t j = first_scored(n_ctx); j + 1 < n_ctx; ++j)
            res.nll.add(token_nll(logits.data() + size_t(j) * n_vocab, n_vocab, chunk[j + 1]));
        if (save) save->add_chunk(ic, logits.data());
        if (compare) compare->compare_chunk(ic, logits.data(), res.kl);
        ++res.n_done;
        if (on_chunk) on_chunk(res);
    }
    return res;
}

}  // namespace mf
