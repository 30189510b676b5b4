// The session API the chat, run and bench tools share: a model, a KV cache sized by n_ctx, a
// position counter, and prefill/decode steps that return the last token's logits.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "models/builders.h"
#include "models/kv_cache.h"
#include "models/model.h"

namespace mf {

struct SessionParams {
    // SessionParams{n_ctx, n_batch}: the two most set; the cache and attention settings as members.
    explicit SessionParams(uint32_t n_ctx_ = 0, uint32_t n_batch_ = 256) : n_ctx(n_ctx_), n_batch(n_batch_) {}

    uint32_t n_ctx = 0;      // positions a conversation may reach; 0: min(model's context_length, 4096)
    uint32_t n_batch = 256;  // prefill processes the prompt in chunks of at most this many tokens
    KVOverrides kv;          // -ctk, -ctv, --kv-window, --kv-sinks
    AttnImpl attn = AttnImpl::FLASH;  // --attn: attention kernels (models/builders.h; attn_impl_from_name)
};

// The plan a session with these parameters would allocate (for printing before loading weights).
KVPlan session_kv_plan(const HParams& hp, const SessionParams& params);

class Session {
public:
    // Allocates the KV cache its plan describes on the model's backend.
    Session(const Model& model, const SessionParams& params);
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

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
    uint32_t n_ctx() const { return kv_->plan.n_ctx; }
    // Whether n more tokens fit: always, when every layer is windowed (streaming).
    bool fits(size_t n) const { return kv_->plan.unbounded() || n_past_ + n <= kv_->plan.n_ctx; }
    size_t kv_bytes() const { return kv_->plan.total_bytes; }
    const KVPlan& kv_plan() const { return kv_->plan; }
    const Model& model() const { return model_; }
    // Forgets every position from n on (n <= n_past); reset() forgets all. A windowed cache whose
    // ring has overwritten what position n needs is rebuilt by prefilling the kept tokens again.
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
        std::vector<KVStepInput> kv_in;  // per cache group: rows and mask
        Tensor* logits = nullptr;     // f32 [n_vocab, 1], or [n_vocab, n_tokens] with all_logits
        uint32_t n_tokens = 0;
        std::vector<uint32_t> spans;  // per cache group: rows attention reads
        bool all_logits = false;
        // The inputs' host side, in one block: tokens, positions, then per group its rows and mask.
        // A decode step's block is pinned (inputs_pin, declared after it so that a StepGraph being
        // destroyed unpins it before freeing it; build_step resets it before replacing the StepGraph),
        // so its uploads are DMA from it rather than copies staged by the driver.
        std::vector<uint8_t> inputs;
        std::unique_ptr<HostPin> inputs_pin;
        int64_t mask_q = -1;  // the position a one-token step's masks in `inputs` were written for; -1: none
    };
    // Layers whose caches share a geometry (window, sinks, rows) share step inputs.
    struct KVGroup {
        KVLayerPlan geometry;           // a representative layer
        std::vector<int32_t> slot_pos;  // per cache row: the position it holds, -1 = empty
    };

    // Runs n tokens; with all_logits, appends their logits to *all (else keeps the last in logits_).
    void eval(const int32_t* tokens, uint32_t n, std::vector<float>* all = nullptr);
    void build_step(uint32_t n, const std::vector<uint32_t>& spans, bool all_logits);
    void fill_mask(const KVGroup& g, uint32_t span, uint32_t n, float* mask) const;
    // Whether every row position n_past - 1 attends to is still cached in every group.
    bool cache_holds_context() const;
    void check_prompt(const std::vector<int32_t>& tokens) const;

    const Model& model_;
    Backend& backend_;
    SessionParams params_;
    std::unique_ptr<KVCache> kv_;
    std::unique_ptr<Buffer> arena_;
    StepGraph step_;  // the graph last built; valid while arena_ holds its memory
    std::vector<KVGroup> groups_;
    std::vector<uint32_t> layer_group_;
    std::vector<float> logits_;  // n_vocab values, never reallocated: pinned by logits_pin_
    HostPin logits_pin_;
    // Decode steps update the last step's masks (MINFER_FULL_MASKS=1 writes them whole each step, to
    // check the update against).
    bool step_masks_ = true;
    uint32_t n_past_ = 0;
    std::vector<int32_t> tokens_;
};

}  // namespace mf
