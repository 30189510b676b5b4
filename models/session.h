// The session API the chat, run and bench tools share: a model, a KV cache sized by n_ctx, a
// position counter, and prefill/decode steps that return the last token's logits.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "models/kv_cache.h"
#include "models/model.h"

namespace mf {

struct SessionParams {
    uint32_t n_ctx = 0;      // positions the KV cache holds; 0: min(model's context_length, 4096)
    uint32_t n_batch = 256;  // prefill processes the prompt in chunks of at most this many tokens
};

class Session {
public:
    // Allocates the KV cache on the model's backend.
    Session(const Model& model, const SessionParams& params);

    // Appends tokens at the current position; returns the logits after the last one [n_vocab].
    // Throws Error when the tokens do not fit in the remaining context.
    const std::vector<float>& prefill(const std::vector<int32_t>& tokens);
    // Like prefill, but returns the logits after every token: [tokens.size() * n_vocab], token-major
    // (row i predicts token i + 1). For perplexity.
    std::vector<float> prefill_all(const std::vector<int32_t>& tokens);
    // Appends one token; returns the logits that follow it [n_vocab].
    const std::vector<float>& decode(int32_t token);

    uint32_t n_past() const { return n_past_; }  // tokens in the cache
    // The ids at positions 0 .. n_past - 1 (what the cache holds), for reusing a shared prefix.
    const std::vector<int32_t>& tokens() const { return tokens_; }
    uint32_t n_ctx() const { return kv_->n_ctx; }
    size_t kv_bytes() const { return kv_->bytes; }
    const Model& model() const { return model_; }
    // Forgets every position from n on (n <= n_past); reset() forgets all.
    void truncate(uint32_t n);
    void reset() { truncate(0); }

private:
    // One forward graph with its inputs. Decode steps with the same attention span reuse it as
    // built and allocated (the backend sees the very same graph; the CUDA backend replays it).
    struct StepGraph {
        std::unique_ptr<Context> ctx;
        Graph graph;
        Tensor* tokens = nullptr;     // I32 [n_tokens]
        Tensor* positions = nullptr;  // I32 [n_tokens]
        Tensor* kq_mask = nullptr;    // f32 [n_kv, n_tokens]
        std::map<int64_t, Tensor*> v_slots;
        Tensor* logits = nullptr;     // f32 [n_vocab, 1], or [n_vocab, n_tokens] with all_logits
        uint32_t n_tokens = 0;
        uint32_t n_kv = 0;
        bool all_logits = false;
    };

    // Runs n tokens; with all_logits, appends their logits to *all (else keeps the last in logits_).
    void eval(const int32_t* tokens, uint32_t n, std::vector<float>* all = nullptr);
    void build_step(uint32_t n, uint32_t n_kv, bool all_logits);
    void check_prompt(const std::vector<int32_t>& tokens) const;

    const Model& model_;
    Backend& backend_;
    SessionParams params_;
    std::unique_ptr<KVCache> kv_;
    std::unique_ptr<Buffer> arena_;
    StepGraph step_;  // the graph last built; valid while arena_ holds its memory
    std::vector<float> logits_;
    uint32_t n_past_ = 0;
    std::vector<int32_t> tokens_;
};

}  // namespace mf
