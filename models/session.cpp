// Session: builds one forward graph per step, allocates it in a reused arena, runs it on the
// model's backend and reads back the logits.
#include "models/session.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/common.h"
#include "models/builders.h"

namespace mf {

KVPlan session_kv_plan(const HParams& hp, const SessionParams& params) {
    uint32_t n_ctx = params.n_ctx ? params.n_ctx : std::min<uint32_t>(hp.n_ctx_train, 4096);
    if (n_ctx == 0) n_ctx = 4096;
    return plan_kv_cache(hp, params.kv, n_ctx, params.n_batch ? params.n_batch : 256);
}

Session::Session(const Model& model, const SessionParams& params)
    : model_(model),
      backend_(*model.backend),
      params_(params),
      logits_(model.hp.n_vocab),
      logits_pin_(*model.backend, logits_.data(), logits_.size() * sizeof(float)),
      step_masks_(!std::getenv("MINFER_FULL_MASKS") || std::string(std::getenv("MINFER_FULL_MASKS")) != "1") {
    if (params_.n_batch == 0) params_.n_batch = 256;
    kv_ = make_kv_cache(session_kv_plan(model.hp, params_), backend_);
    for (const KVLayerPlan& l : kv_->plan.layers) {
        size_t g = 0;
        while (g < groups_.size() && !(groups_[g].geometry.window == l.window && groups_[g].geometry.sinks == l.sinks &&
                                       groups_[g].geometry.n_slots == l.n_slots))
            ++g;
        if (g == groups_.size()) groups_.push_back(KVGroup{l, std::vector<int32_t>(l.n_slots, -1)});
        layer_group_.push_back(uint32_t(g));
    }
}

bool Session::cache_holds_context() const {
    if (n_past_ == 0) return true;
    const uint32_t last = n_past_ - 1;
    for (const KVGroup& g : groups_) {
        const KVLayerPlan& l = g.geometry;
        const uint32_t first = l.windowed() && last + 1 > l.window ? last + 1 - l.window : 0;
        for (uint32_t p = 0; p <= last; ++p) {
            if (p >= l.sinks && p < first) p = first;  // between the sinks and the window: not needed
            if (g.slot_pos[l.slot(p)] != int32_t(p)) return false;
        }
    }
    return true;
}

void Session::truncate(uint32_t n) {
    MF_ASSERT(n <= n_past_);
    step_.mask_q = -1;  // rows it showed may be gone
    n_past_ = n;
    tokens_.resize(n);
    for (KVGroup& g : groups_)
        for (int32_t& p : g.slot_pos)
            if (p >= int32_t(n)) p = -1;
    if (cache_holds_context()) return;
    // The ring wrapped over rows position n - 1 still needs: rebuild from the kept tokens.
    const std::vector<int32_t> keep = tokens_;
    n_past_ = 0;
    tokens_.clear();
    for (KVGroup& g : groups_) std::fill(g.slot_pos.begin(), g.slot_pos.end(), -1);
    prefill(keep);
}

void Session::check_prompt(const std::vector<int32_t>& tokens) const {
    if (tokens.empty()) throw Error("prefill: no tokens");
    if (!fits(tokens.size()))
        throw Error(strfmt("the prompt needs %zu positions but only %u of the context's %u are left (raise -c)",
                           tokens.size(), n_ctx() - n_past_, n_ctx()));
    for (int32_t t : tokens)
        if (t < 0 || uint32_t(t) >= model_.hp.n_vocab) throw Error(strfmt("token id %d is outside the vocabulary", t));
}

const std::vector<float>& Session::prefill(const std::vector<int32_t>& tokens) {
    check_prompt(tokens);
    for (size_t i = 0; i < tokens.size(); i += params_.n_batch) {
        const uint32_t n = uint32_t(std::min<size_t>(params_.n_batch, tokens.size() - i));
        eval(tokens.data() + i, n);
    }
    return logits_;
}

std::vector<float> Session::prefill_all(const std::vector<int32_t>& tokens) {
    check_prompt(tokens);
    std::vector<float> all;
    all.reserve(tokens.size() * model_.hp.n_vocab);
    for (size_t i = 0; i < tokens.size(); i += params_.n_batch) {
        const uint32_t n = uint32_t(std::min<size_t>(params_.n_batch, tokens.size() - i));
        eval(tokens.data() + i, n, &all);
    }
    return all;
}

const std::vector<float>& Session::decode(int32_t token) {
    if (!fits(1)) throw Error(strfmt("the context is full (%u tokens; raise -c)", n_ctx()));
    if (token < 0 || uint32_t(token) >= model_.hp.n_vocab)
        throw Error(strfmt("token id %d is outside the vocabulary", token));
    eval(&token, 1);
    return logits_;
}

// Attention spans the cache rounded up to this many rows (the rest masked out), so that
// consecutive decode steps have the same graph.
constexpr uint32_t kKvPad = 256;

void Session::build_step(uint32_t n, const std::vector<uint32_t>& spans, bool all_logits) {
    step_.inputs_pin.reset();  // unpinned before its block is freed
    step_ = StepGraph{};
    step_.ctx = std::make_unique<Context>();
    Context& ctx = *step_.ctx;
    step_.tokens = ctx.new_tensor_1d(DType::I32, n);
    step_.positions = ctx.new_tensor_1d(DType::I32, n);
    for (Tensor* t : {step_.tokens, step_.positions}) t->flags |= TENSOR_INPUT;
    step_.tokens->name = "tokens", step_.positions->name = "positions";
    for (uint32_t span : spans) {
        KVStepInput in;
        in.n_span = span;
        in.rows = ctx.new_tensor_1d(DType::I32, n);
        in.mask = ctx.new_tensor_2d(DType::F32, span, n);
        in.rows->flags |= TENSOR_INPUT;
        in.mask->flags |= TENSOR_INPUT;
        in.rows->name = "kv_rows", in.mask->name = "kq_mask";
        step_.kv_in.push_back(in);
    }

    ForwardState state{ctx, step_.graph, model_, *kv_, n, all_logits, step_.tokens, step_.positions,
                       step_.kv_in, layer_group_, params_.attn};
    step_.logits = build_forward(state);
    step_.logits->flags |= TENSOR_OUTPUT;
    graph_expand(step_.graph, step_.logits);
    allocate_graph(backend_, step_.graph, arena_);
    size_t bytes = 2 * n * sizeof(int32_t);
    for (uint32_t span : spans) bytes += n * sizeof(int32_t) + size_t(span) * n * sizeof(float);
    step_.inputs.resize(bytes);
    // Only decode steps pin theirs: a prefill's block (masks of up to n_batch x span floats) would take
    // longer to pin than its uploads save.
    if (n == 1) step_.inputs_pin = std::make_unique<HostPin>(backend_, step_.inputs.data(), bytes);
    // Last: eval reuses the step only once all of it was built (a build that threw is built again).
    step_.n_tokens = n;
    step_.spans = spans;
    step_.all_logits = all_logits;
}

// The mask of n new tokens from position n_past on: token i (at position q) sees the rows holding
// positions p <= q within its window, and the sinks.
void Session::fill_mask(const KVGroup& g, uint32_t span, uint32_t n, float* mask) const {
    const KVLayerPlan& l = g.geometry;
    for (uint32_t i = 0; i < n; ++i) {
        const int64_t q = int64_t(n_past_) + i;
        for (uint32_t j = 0; j < span; ++j) {
            const int64_t p = g.slot_pos[j];
            const bool visible = p >= 0 && p <= q && (!l.windowed() || p < l.sinks || q - p < l.window);
            mask[size_t(i) * span + j] = visible ? 0.0f : -INFINITY;
        }
    }
}

void Session::eval(const int32_t* tokens, uint32_t n, std::vector<float>* all) {
    MF_ASSERT(n <= params_.n_batch);  // windowed rings leave room for n_batch new rows, no more
    std::vector<uint32_t> spans;
    for (const KVGroup& g : groups_)
        spans.push_back(std::min(g.geometry.n_slots, (n_past_ + n + kKvPad - 1) / kKvPad * kKvPad));
    const bool all_logits = all != nullptr;
    if (!step_.ctx || step_.n_tokens != n || step_.spans != spans || step_.all_logits != all_logits)
        build_step(n, spans, all_logits);

    // Each input is written into the step's block and uploaded from there. The uploads may still be
    // reading a pinned block after they return; the next step writes it only after compute_graph's
    // synchronize.
    uint8_t* in = step_.inputs.data();
    auto next_i32 = [&](Tensor* t) {
        int32_t* p = reinterpret_cast<int32_t*>(in);
        in += t->nbytes();
        return p;
    };
    // A decode step right after the one the block's masks were written for (the same graph, nothing
    // truncated since) updates them instead of writing them anew: O(1) against O(span) a group.
    const bool stepping = step_masks_ && n == 1 && step_.mask_q >= 0 && step_.mask_q + 1 == int64_t(n_past_);
    int32_t* tok = next_i32(step_.tokens);
    int32_t* pos = next_i32(step_.positions);
    std::copy(tokens, tokens + n, tok);
    for (uint32_t i = 0; i < n; ++i) pos[i] = int32_t(n_past_ + i);
    tensor_set(step_.tokens, tok);
    tensor_set(step_.positions, pos);
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
        KVGroup& g = groups_[gi];
        const KVLayerPlan& l = g.geometry;
        const uint32_t span = spans[gi];
        // The new tokens' rows; the ring has room for them without overwriting what they attend to.
        int32_t* rows = next_i32(step_.kv_in[gi].rows);
        for (uint32_t i = 0; i < n; ++i) {
            rows[i] = int32_t(l.slot(n_past_ + i));
            MF_ASSERT(uint32_t(rows[i]) < span);
            g.slot_pos[size_t(rows[i])] = int32_t(n_past_ + i);
        }
        float* mask = reinterpret_cast<float*>(in);
        in += step_.kv_in[gi].mask->nbytes();
        tensor_set(step_.kv_in[gi].rows, rows);
        Tensor* mask_t = step_.kv_in[gi].mask;
        if (stepping) {
            // One token after the one this mask was written for: the row the new token went to turns
            // visible, and with a window the row of the position that just left it goes dark (unless
            // the new token took that row). Nothing else changes, and the device's copy of the rest,
            // an input of this same graph, is what the last step uploaded: only these go up.
            auto set = [&](uint32_t j, float v) {
                MF_ASSERT(j < span);
                mask[j] = v;
                backend_.upload(mask_t, mask + j, j * sizeof(float), sizeof(float));
            };
            const int64_t q = n_past_, out = q - int64_t(l.window);
            if (l.windowed() && out >= int64_t(l.sinks) && g.slot_pos[l.slot(uint32_t(out))] == out)
                set(l.slot(uint32_t(out)), -INFINITY);
            set(uint32_t(rows[0]), 0.0f);
        } else {
            fill_mask(g, span, n, mask);
            tensor_set(mask_t, mask);
        }
    }
    MF_ASSERT(in == step_.inputs.data() + step_.inputs.size());
    step_.mask_q = n == 1 ? int64_t(n_past_) : -1;

    compute_graph(backend_, step_.graph);
    if (all_logits) {
        const size_t old = all->size();
        all->resize(old + size_t(n) * model_.hp.n_vocab);
        tensor_get(step_.logits, all->data() + old);
        std::copy(all->end() - model_.hp.n_vocab, all->end(), logits_.begin());  // no reallocation: pinned
    } else {
        tensor_get(step_.logits, logits_.data());
    }
    n_past_ += n;
    tokens_.insert(tokens_.end(), tokens, tokens + n);
}

}  // namespace mf
