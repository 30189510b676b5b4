// The sampler: greedy is argmax, a seed fixes the sequence, each filter removes what it should,
// and plain temperature sampling follows the softmax distribution.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "models/sampler.h"
#include "test_util.h"

using namespace mf;

namespace {
SamplerParams plain(float temp, uint64_t seed) {
    SamplerParams p;
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}
}  // namespace

TEST_CASE("greedy picks the largest logit (lowest id on ties)") {
    const std::vector<float> logits = mf_test::random_floats(1000, -5, 5);
    const int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    Sampler s(plain(0.0f, 1));
    CHECK(s.sample(logits.data(), 1000) == best);
    const std::vector<float> tie = {1.0f, 3.0f, 3.0f, 2.0f};
    CHECK(s.sample(tie.data(), 4) == 1);
}

TEST_CASE("the same seed gives the same tokens; another seed differs") {
    const std::vector<float> logits = mf_test::random_floats(500, -2, 2);
    auto run = [&](uint64_t seed) {
        SamplerParams p;
        p.temp = 1.0f;
        p.seed = seed;
        Sampler s(p);
        std::vector<int32_t> out;
        for (int i = 0; i < 64; ++i) {
            out.push_back(s.sample(logits.data(), 500));
            s.accept(out.back());
        }
        return out;
    };
    const uint64_t seed = mf_test::seed();
    CHECK(run(seed) == run(seed));
    CHECK(run(seed) != run(seed + 1));
}

TEST_CASE("reset restarts the RNG") {
    const std::vector<float> logits = mf_test::random_floats(100);
    Sampler s(plain(1.0f, 7));
    std::vector<int32_t> a, b;
    for (int i = 0; i < 20; ++i) a.push_back(s.sample(logits.data(), 100));
    s.reset();
    for (int i = 0; i < 20; ++i) b.push_back(s.sample(logits.data(), 100));
    CHECK(a == b);
}

TEST_CASE("top-k 1 is greedy at any temperature") {
    const std::vector<float> logits = mf_test::random_floats(300, -3, 3);
    const int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    SamplerParams p = plain(5.0f, mf_test::seed());
    p.top_k = 1;
    Sampler s(p);
    for (int i = 0; i < 50; ++i) CHECK(s.sample(logits.data(), 300) == best);
}

TEST_CASE("top-k, top-p and min-p only ever return allowed tokens") {
    // Probabilities 0.5, 0.25, 0.125, ... after softmax of log-probabilities.
    std::vector<float> logits;
    for (int i = 0; i < 12; ++i) logits.push_back(std::log(std::pow(0.5f, float(i + 1))));
    SUBCASE("top-k 3") {
        SamplerParams p = plain(1.0f, mf_test::seed());
        p.top_k = 3;
        Sampler s(p);
        for (int i = 0; i < 300; ++i) CHECK(s.sample(logits.data(), 12) < 3);
    }
    SUBCASE("top-p 0.8 keeps the smallest set reaching 0.8: ids 0, 1, 2") {
        SamplerParams p = plain(1.0f, mf_test::seed());
        p.top_p = 0.8f;
        Sampler s(p);
        for (int i = 0; i < 300; ++i) CHECK(s.sample(logits.data(), 12) < 3);
    }
    SUBCASE("min-p 0.2 keeps p >= 0.1: ids 0, 1, 2") {
        SamplerParams p = plain(1.0f, mf_test::seed());
        p.min_p = 0.2f;
        Sampler s(p);
        for (int i = 0; i < 300; ++i) CHECK(s.sample(logits.data(), 12) < 3);
    }
}

TEST_CASE("the repetition penalty demotes recent tokens") {
    const std::vector<float> logits = {2.0f, 1.9f, 1.0f, -1.0f};
    SamplerParams p = plain(0.0f, 1);
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 2;
    Sampler s(p);
    CHECK(s.sample(logits.data(), 4) == 0);
    s.accept(0);  // 2.0 / 1.5 = 1.33 < 1.9
    CHECK(s.sample(logits.data(), 4) == 1);
    s.accept(1);  // 1.9 / 1.5 = 1.27 < 1.33: id 0 wins again
    CHECK(s.sample(logits.data(), 4) == 0);
    s.accept(2);
    s.accept(3);  // the window of 2 now holds only ids 2 and 3
    CHECK(s.sample(logits.data(), 4) == 0);
}

TEST_CASE("temperature sampling follows the softmax distribution") {
    const std::vector<float> logits = {0.0f, 1.0f, 2.0f, -1.0f};
    const float temp = 0.7f;
    double z = 0;
    for (float l : logits) z += std::exp(l / temp);
    Sampler s(plain(temp, mf_test::seed()));
    const int n = 40000;
    std::map<int32_t, int> counts;
    for (int i = 0; i < n; ++i) counts[s.sample(logits.data(), 4)]++;
    for (int32_t id = 0; id < 4; ++id) {
        const double expect = std::exp(logits[size_t(id)] / temp) / z;
        // 5 standard deviations of a binomial proportion: fails only on a real bias.
        const double sd = std::sqrt(expect * (1 - expect) / n);
        CHECK(std::fabs(double(counts[id]) / n - expect) < 5 * sd + 1e-4);
    }
}
