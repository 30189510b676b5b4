// Byte-level BPE tokenization (tokenizer.ggml.model "gpt2"): llama.cpp's llm_tokenizer_bpe.
// Each pre-token is byte-encoded to GPT-2's printable characters, then merged by rank.
#include <queue>

#include "core/common.h"
#include "models/pretokenize.h"
#include "models/tokenizer_impl.h"
#include "models/utf8.h"

namespace mf {

namespace {

struct Symbol {
    int prev;
    int next;
    const char* text;
    size_t n;  // bytes; 0 once merged into its left neighbour
};

struct Bigram {
    int left;
    int right;
    int32_t rank;
    std::string text;  // left + right when queued, to detect stale entries
};

// Lowest rank first; on ties the leftmost pair.
struct BigramOrder {
    bool operator()(const Bigram& l, const Bigram& r) const {
        return l.rank > r.rank || (l.rank == r.rank && l.left > r.left);
    }
};

class BpeWord {
public:
    BpeWord(const Vocab& vocab, const std::string& word) : vocab_(vocab), word_(word) {}

    void tokenize(std::vector<int32_t>& out) {
        if (vocab_.ignore_merges) {
            const int32_t id = vocab_.find(word_);
            if (id != TOKEN_NONE) {
                out.push_back(id);
                return;
            }
        }
        for (size_t offs = 0; offs < word_.size();) {
            const size_t n = std::min(utf8_seq_len(word_[offs]), word_.size() - offs);
            const int index = int(symbols_.size());
            symbols_.push_back({index - 1, offs + n == word_.size() ? -1 : index + 1, word_.data() + offs, n});
            offs += n;
        }
        for (int i = 1; i < int(symbols_.size()); ++i) add_bigram(i - 1, i);

        while (!queue_.empty()) {
            const Bigram bigram = queue_.top();
            queue_.pop();
            Symbol& left = symbols_[size_t(bigram.left)];
            Symbol& right = symbols_[size_t(bigram.right)];
            if (left.n == 0 || right.n == 0) continue;
            if (left.n + right.n != bigram.text.size() ||
                bigram.text.compare(0, left.n, left.text, left.n) != 0 ||
                bigram.text.compare(left.n, right.n, right.text, right.n) != 0) {
                continue;  // stale: a neighbour changed since this pair was queued
            }
            left.n += right.n;
            right.n = 0;
            left.next = right.next;
            if (right.next >= 0) symbols_[size_t(right.next)].prev = bigram.left;
            add_bigram(left.prev, bigram.left);
            add_bigram(bigram.left, left.next);
        }

        for (const Symbol& sym : symbols_) {
            if (sym.n == 0) continue;
            const std::string text(sym.text, sym.n);
            const int32_t id = vocab_.find(text);
            if (id != TOKEN_NONE) {
                out.push_back(id);
                continue;
            }
            // No token for the merged text: emit what single bytes have tokens (llama.cpp's fallback).
            for (char c : text) {
                const int32_t byte_id = vocab_.find(std::string(1, c));
                if (byte_id != TOKEN_NONE) out.push_back(byte_id);
            }
        }
    }

private:
    void add_bigram(int left, int right) {
        if (left == -1 || right == -1) return;
        const Symbol& l = symbols_[size_t(left)];
        const Symbol& r = symbols_[size_t(right)];
        std::string left_text(l.text, l.n), right_text(r.text, r.n);
        const int32_t rank = vocab_.merge_rank(left_text, right_text);
        if (rank < 0) return;
        queue_.push({left, right, rank, left_text + right_text});
    }

    const Vocab& vocab_;
    const std::string& word_;
    std::vector<Symbol> symbols_;
    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue_;
};

}  // namespace

void tokenize_bpe(const Vocab& vocab, const std::string& text, std::vector<int32_t>& out) {
    MF_ASSERT(vocab.pretokenizer != nullptr);
    for (const std::string& word : vocab.pretokenizer->split(text)) {
        std::string encoded;
        encoded.reserve(word.size() * 2);
        for (char c : word) encoded += bpe_byte_to_char(uint8_t(c));
        BpeWord(vocab, encoded).tokenize(out);
    }
}

}  // namespace mf
