// SentencePiece-style tokenization (tokenizer.ggml.model "llama"): llama.cpp's llm_tokenizer_spm.
// Characters merge pairwise by the score of the token they form; leftovers fall back to bytes.
#include <map>
#include <queue>
#include <utility>

#include "core/common.h"
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
    float score;
    size_t size;  // bytes of the merged text, to detect stale entries
};

// Highest score first; on ties the leftmost pair, as SentencePiece does.
struct BigramOrder {
    bool operator()(const Bigram& l, const Bigram& r) const {
        return l.score < r.score || (l.score == r.score && l.left > r.left);
    }
};

int32_t byte_token(const Vocab& vocab, uint8_t byte) {
    static const char* hex = "0123456789ABCDEF";
    const char buf[7] = {'<', '0', 'x', hex[byte >> 4], hex[byte & 15], '>', 0};
    int32_t id = vocab.find(buf);
    if (id == TOKEN_NONE) id = vocab.find(std::string(1, char(byte)));
    if (id == TOKEN_NONE) id = vocab.unk_id;
    if (id == TOKEN_NONE) throw Error(strfmt("the vocabulary has no token for byte 0x%02X and no unknown token", byte));
    return id;
}

class SpmSession {
public:
    explicit SpmSession(const Vocab& vocab) : vocab_(vocab) {}

    void tokenize(const std::string& text, std::vector<int32_t>& out) {
        for (size_t offs = 0; offs < text.size();) {
            const size_t n = std::min(utf8_seq_len(text[offs]), text.size() - offs);
            const int index = int(symbols_.size());
            symbols_.push_back({index - 1, offs + n == text.size() ? -1 : index + 1, text.data() + offs, n});
            offs += n;
        }
        for (int i = 1; i < int(symbols_.size()); ++i) try_add_bigram(i - 1, i);

        while (!queue_.empty()) {
            const Bigram bigram = queue_.top();
            queue_.pop();
            Symbol& left = symbols_[size_t(bigram.left)];
            Symbol& right = symbols_[size_t(bigram.right)];
            if (left.n == 0 || right.n == 0 || left.n + right.n != bigram.size) continue;  // stale
            left.n += right.n;
            right.n = 0;
            left.next = right.next;
            if (right.next >= 0) symbols_[size_t(right.next)].prev = bigram.left;
            try_add_bigram(left.prev, bigram.left);
            try_add_bigram(bigram.left, left.next);
        }

        if (symbols_.empty()) return;
        for (int i = 0; i != -1; i = symbols_[size_t(i)].next) resegment(symbols_[size_t(i)], out);
    }

private:
    // A merged symbol that is no token is split back along the merges that built it.
    void resegment(const Symbol& symbol, std::vector<int32_t>& out) {
        const std::string text(symbol.text, symbol.n);
        const int32_t id = vocab_.find(text);
        if (id != TOKEN_NONE) {
            out.push_back(id);
            return;
        }
        const auto it = rev_merge_.find(text);
        if (it == rev_merge_.end()) {
            for (size_t j = 0; j < symbol.n; ++j) out.push_back(byte_token(vocab_, uint8_t(symbol.text[j])));
            return;
        }
        resegment(symbols_[size_t(it->second.first)], out);
        resegment(symbols_[size_t(it->second.second)], out);
    }

    void try_add_bigram(int left, int right) {
        if (left == -1 || right == -1) return;
        const Symbol& l = symbols_[size_t(left)];
        const Symbol& r = symbols_[size_t(right)];
        const std::string text(l.text, l.n + r.n);
        const int32_t id = vocab_.find(text);
        if (id == TOKEN_NONE) return;
        queue_.push({left, right, vocab_.scores[size_t(id)], text.size()});
        rev_merge_[text] = {left, right};
    }

    const Vocab& vocab_;
    std::vector<Symbol> symbols_;
    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue_;
    std::map<std::string, std::pair<int, int>> rev_merge_;
};

}  // namespace

void tokenize_spm(const Vocab& vocab, const std::string& text, std::vector<int32_t>& out) {
    SpmSession(vocab).tokenize(text, out);
}

}  // namespace mf
