// Running a model the way the golden-output suites check it: a 64-position session, every position's
// logits by decode or by one batched prefill, and the greedy continuation.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "models/model.h"
#include "models/session.h"

namespace mf_test {

// A 64-position session with the model's default (f16) KV cache.
inline mf::SessionParams session64() {
    mf::SessionParams p;
    p.n_ctx = 64;
    return p;
}

inline int32_t argmax(const std::vector<float>& v) {
    return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

// The logits after each of ids, fed one by one from position 0 (the decode path): [position][n_vocab].
inline std::vector<std::vector<float>> decode_each(const mf::Model& model, const std::vector<int32_t>& ids,
                                                   const mf::SessionParams& params = session64()) {
    mf::Session s(model, params);
    std::vector<std::vector<float>> out;
    for (size_t i = 0; i < ids.size(); ++i) out.push_back(i == 0 ? s.prefill({ids[0]}) : s.decode(ids[i]));
    return out;
}

// The logits of every position of ids from one batched prefill: [position][n_vocab].
inline std::vector<std::vector<float>> prefill_each(const mf::Model& model, const std::vector<int32_t>& ids,
                                                    const mf::SessionParams& params = session64()) {
    mf::Session s(model, params);
    const std::vector<float> all = s.prefill_all(ids);
    const size_t nv = all.size() / ids.size();
    std::vector<std::vector<float>> out;
    for (size_t i = 0; i < ids.size(); ++i)
        out.emplace_back(all.begin() + long(i * nv), all.begin() + long((i + 1) * nv));
    return out;
}

// n tokens chosen greedily (argmax) after prefilling ids.
inline std::vector<int32_t> greedy_after(const mf::Model& model, const std::vector<int32_t>& ids, size_t n) {
    mf::Session s(model, session64());
    const std::vector<float>* l = &s.prefill(ids);
    std::vector<int32_t> out;
    for (size_t i = 0; i < n; ++i) {
        out.push_back(argmax(*l));
        l = &s.decode(out.back());
    }
    return out;
}

}  // namespace mf_test
