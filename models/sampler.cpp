// The sampler chain; see sampler.h for the order and the meaning of each parameter.
#include "models/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/common.h"

namespace mf {

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {}

void Sampler::reset() {
    recent_.clear();
    rng_.seed(params_.seed);
}

void Sampler::accept(int32_t token) {
    if (params_.repeat_last_n <= 0) return;
    recent_.push_back(token);
    while (int(recent_.size()) > params_.repeat_last_n) recent_.pop_front();
}

double Sampler::uniform() { return double(rng_() >> 11) * (1.0 / 9007199254740992.0); }

int32_t Sampler::sample(const float* logits, int32_t n_vocab) {
    MF_ASSERT(n_vocab > 0);
    cand_.resize(size_t(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {i, logits[i], 0.0f};

    if (params_.repeat_penalty != 1.0f && !recent_.empty()) {
        const std::unordered_set<int32_t> seen(recent_.begin(), recent_.end());
        for (int32_t id : seen) {
            if (id < 0 || id >= n_vocab) continue;
            float& l = cand_[size_t(id)].logit;
            l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
        }
    }

    auto by_logit = [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    if (params_.temp <= 0.0f) {
        return std::min_element(cand_.begin(), cand_.end(), by_logit)->id;
    }

    size_t n = cand_.size();
    if (params_.top_k > 0 && size_t(params_.top_k) < n) {
        n = size_t(params_.top_k);
        std::partial_sort(cand_.begin(), cand_.begin() + long(n), cand_.end(), by_logit);
    } else {
        std::sort(cand_.begin(), cand_.end(), by_logit);
    }
    cand_.resize(n);

    // Probabilities at temperature 1 decide top-p and min-p (as llama.cpp's chain does).
    auto softmax = [&](float t) {
        const float max_l = cand_[0].logit;
        double sum = 0;
        for (auto& c : cand_) sum += (c.p = std::exp((c.logit - max_l) / t));
        for (auto& c : cand_) c.p = float(c.p / sum);
    };
    softmax(1.0f);
    if (params_.top_p < 1.0f) {
        double cum = 0;
        size_t keep = cand_.size();
        for (size_t i = 0; i < cand_.size(); ++i) {
            cum += cand_[i].p;
            if (cum >= params_.top_p) {
                keep = i + 1;
                break;
            }
        }
        cand_.resize(keep);
    }
    if (params_.min_p > 0.0f) {
        const float threshold = params_.min_p * cand_[0].p;
        size_t keep = 1;
        while (keep < cand_.size() && cand_[keep].p >= threshold) ++keep;
        cand_.resize(keep);
    }

    softmax(params_.temp);
    double r = uniform();
    for (const auto& c : cand_) {
        r -= c.p;
        if (r < 0) return c.id;
    }
    return cand_.back().id;
}

}  // namespace mf
