// Session: builds one forward graph per step, allocates it in a reused arena, runs it on the
// model's backend and reads back the logits.
#include "models/session.h"

#include <algorithm>
#include <cmath>

#include "core/common.h"
#include "models/builders.h"

namespace mf {

Session::Session(const Model& model, const SessionParams& params)
    : model_(model), backend_(*model.backend), params_(params) {
    uint32_t n_ctx = params.n_ctx ? params.n_ctx : std::min<uint32_t>(model.hp.n_ctx_train, 4096);
    if (n_ctx == 0) n_ctx = 4096;
    if (params_.n_batch == 0) params_.n_batch = 256;
    kv_ = make_kv_cache(model.hp, backend_, n_ctx);
}

void Session::truncate(uint32_t n) {
    MF_ASSERT(n <= n_past_);
    n_past_ = n;
    tokens_.resize(n);
}

void Session::check_prompt(const std::vector<int32_t>& tokens) const {
    if (tokens.empty()) throw Error("prefill: no tokens");
    if (size_t(n_past_) + tokens.size() > kv_->n_ctx)
        throw Error(strfmt("the prompt needs %zu positions but only %u of the context's %u are left (raise -c)",
                           tokens.size(), kv_->n_ctx - n_past_, kv_->n_ctx));
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
    if (n_past_ + 1 > kv_->n_ctx) throw Error(strfmt("the context is full (%u tokens; raise -c)", kv_->n_ctx));
    if (token < 0 || uint32_t(token) >= model_.hp.n_vocab)
        throw Error(strfmt("token id %d is outside the vocabulary", token));
    eval(&token, 1);
    return logits_;
}

// Attention spans the cache rounded up to this many positions (the rest masked out), so that
// consecutive decode steps have the same graph.
constexpr uint32_t kKvPad = 256;

void Session::build_step(uint32_t n, uint32_t n_kv, bool all_logits) {
    step_ = StepGraph{};
    step_.ctx = std::make_unique<Context>();
    Context& ctx = *step_.ctx;
    step_.n_tokens = n;
    step_.n_kv = n_kv;
    step_.all_logits = all_logits;
    step_.tokens = ctx.new_tensor_1d(DType::I32, n);
    step_.positions = ctx.new_tensor_1d(DType::I32, n);
    step_.kq_mask = ctx.new_tensor_2d(DType::F32, n_kv, n);
    for (Tensor* t : {step_.tokens, step_.positions, step_.kq_mask}) t->flags |= TENSOR_INPUT;
    step_.tokens->name = "tokens", step_.positions->name = "positions", step_.kq_mask->name = "kq_mask";

    ForwardState state{ctx, step_.graph, model_, *kv_, n, n_kv, all_logits, step_.tokens, step_.positions,
                       step_.kq_mask, {}};
    step_.logits = build_forward(state);
    step_.logits->flags |= TENSOR_OUTPUT;
    graph_expand(step_.graph, step_.logits);
    step_.v_slots = state.v_slots;
    allocate_graph(backend_, step_.graph, arena_);
}

void Session::eval(const int32_t* tokens, uint32_t n, std::vector<float>* all) {
    const uint32_t n_kv = std::min(kv_->n_ctx, (n_past_ + n + kKvPad - 1) / kKvPad * kKvPad);
    const bool all_logits = all != nullptr;
    if (!step_.ctx || step_.n_tokens != n || step_.n_kv != n_kv || step_.all_logits != all_logits)
        build_step(n, n_kv, all_logits);

    std::vector<int32_t> positions(n);
    for (uint32_t i = 0; i < n; ++i) positions[i] = int32_t(n_past_ + i);
    // Causal mask: token i (at position n_past + i) sees cache positions 0 .. n_past + i.
    std::vector<float> mask(size_t(n_kv) * n);
    for (uint32_t i = 0; i < n; ++i)
        for (uint32_t j = 0; j < n_kv; ++j) mask[size_t(i) * n_kv + j] = j <= n_past_ + i ? 0.0f : -INFINITY;
    tensor_set(step_.tokens, tokens);
    tensor_set(step_.positions, positions.data());
    tensor_set(step_.kq_mask, mask.data());
    // V is cached transposed: the value of channel c at position p is element c * n_ctx + p.
    for (auto& [channels, slots] : step_.v_slots) {
        std::vector<int32_t> v(size_t(channels) * n);
        for (int64_t c = 0; c < channels; ++c)
            for (uint32_t t = 0; t < n; ++t) v[size_t(c) * n + t] = int32_t(c * kv_->n_ctx + n_past_ + t);
        tensor_set(slots, v.data());
    }

    compute_graph(backend_, step_.graph);
    if (all_logits) {
        const size_t old = all->size();
        all->resize(old + size_t(n) * model_.hp.n_vocab);
        tensor_get(step_.logits, all->data() + old);
        logits_.assign(all->end() - model_.hp.n_vocab, all->end());
    } else {
        logits_.resize(model_.hp.n_vocab);
        tensor_get(step_.logits, logits_.data());
    }
    n_past_ += n;
    tokens_.insert(tokens_.end(), tokens, tokens + n);
}

}  // namespace mf
