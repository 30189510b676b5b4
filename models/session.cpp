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

const std::vector<float>& Session::prefill(const std::vector<int32_t>& tokens) {
    if (tokens.empty()) throw Error("prefill: no tokens");
    if (size_t(n_past_) + tokens.size() > kv_->n_ctx)
        throw Error(strfmt("the prompt needs %zu positions but only %u of the context's %u are left (raise -c)",
                           tokens.size(), kv_->n_ctx - n_past_, kv_->n_ctx));
    for (int32_t t : tokens)
        if (t < 0 || uint32_t(t) >= model_.hp.n_vocab) throw Error(strfmt("token id %d is outside the vocabulary", t));
    for (size_t i = 0; i < tokens.size(); i += params_.n_batch) {
        const uint32_t n = uint32_t(std::min<size_t>(params_.n_batch, tokens.size() - i));
        eval(tokens.data() + i, n);
    }
    return logits_;
}

const std::vector<float>& Session::decode(int32_t token) {
    if (n_past_ + 1 > kv_->n_ctx) throw Error(strfmt("the context is full (%u tokens; raise -c)", kv_->n_ctx));
    if (token < 0 || uint32_t(token) >= model_.hp.n_vocab)
        throw Error(strfmt("token id %d is outside the vocabulary", token));
    eval(&token, 1);
    return logits_;
}

void Session::eval(const int32_t* tokens, uint32_t n) {
    Context ctx;
    Graph graph;
    const uint32_t n_kv = n_past_ + n;
    Tensor* tok = ctx.new_tensor_1d(DType::I32, n);
    Tensor* pos = ctx.new_tensor_1d(DType::I32, n);
    Tensor* mask = ctx.new_tensor_2d(DType::F32, n_kv, n);
    for (Tensor* t : {tok, pos, mask}) t->flags |= TENSOR_INPUT;
    tok->name = "tokens", pos->name = "positions", mask->name = "kq_mask";

    ForwardState state{ctx, graph, model_, *kv_, n_past_, n, tok, pos, mask};
    Tensor* logits = build_forward(state);
    logits->flags |= TENSOR_OUTPUT;
    graph_expand(graph, logits);
    allocate_graph(backend_, graph, arena_);

    std::vector<int32_t> positions(n);
    for (uint32_t i = 0; i < n; ++i) positions[i] = int32_t(n_past_ + i);
    // Causal mask: token i (at position n_past + i) sees cache positions 0 .. n_past + i.
    std::vector<float> m(size_t(n_kv) * n);
    for (uint32_t i = 0; i < n; ++i)
        for (uint32_t j = 0; j < n_kv; ++j) m[size_t(i) * n_kv + j] = j <= n_past_ + i ? 0.0f : -INFINITY;
    tensor_set(tok, tokens);
    tensor_set(pos, positions.data());
    tensor_set(mask, m.data());

    compute_graph(backend_, graph);
    logits_.resize(model_.hp.n_vocab);
    tensor_get(logits, logits_.data());
    n_past_ += n;
    tokens_.insert(tokens_.end(), tokens, tokens + n);
}

}  // namespace mf
